// What the bindings see of the CUDA engine (plain C++: no CUDA headers).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fastopt {
namespace cuda {

// Limits of the launch plans built from now on (process-wide); 0 means the default: chunks of
// 65536 elements, as many tensors per launch as the kernel parameter space holds, up to 2^31 - 1
// blocks. Tests set them small to exercise multi-launch plans; FASTOPT_CUDA_MAX_TENSORS,
// FASTOPT_CUDA_MAX_BLOCKS and FASTOPT_CUDA_CHUNK_ELEMS set the initial values.
struct LaunchLimits {
  int64_t max_tensors = 0;
  int64_t max_blocks = 0;
  int64_t chunk_elems = 0;
};
LaunchLimits launch_limits();
void set_launch_limits(const LaunchLimits& limits);

int64_t param_bytes();  // the kernel parameter space the launch plans are built for
int runtime_version();  // CUDART_VERSION the engine was compiled with (0 under the emulation)

// Test hooks of the emulation (fastopt._C_simt only; see simt::detail::Hooks): blocks below
// skip_below of kernels whose name contains one of `skip` are not run, launches of kernels named
// in `fail` fail.
void set_simt_hooks(const std::vector<std::string>& skip, int64_t skip_below,
                    const std::vector<std::string>& fail);

}  // namespace cuda
}  // namespace fastopt
