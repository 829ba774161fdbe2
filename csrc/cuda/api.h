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

// Launch variants of the plans built from now on (process-wide; kernels.cuh says why they
// exist). 0 everywhere is the default. FASTOPT_CUDA_UPDATE_BOUNDS ("256,3": threads and
// __launch_bounds__ blocks per SM of the update kernels), FASTOPT_CUDA_TABLES ("tiered": each
// launch passes the smallest compiled launch struct that holds its tensors) and
// FASTOPT_CUDA_COMBINE_SEGMENT (the pipeline's total norm in two levels: blocks of this many
// chunk partials, then one block) set the initial values. Bounds other than the default and
// tiered tables need a build with them (FASTOPT_CUDA_VARIANTS, and the emulation), and are not
// combined (one variant at a time: a product would multiply the kernels compiled).
struct Variants {
  int64_t update_threads = 0;
  int64_t update_min_blocks = 0;
  int64_t tiered = 0;
  int64_t combine_segment = 0;
};
Variants variants();
void set_variants(const Variants& v);
std::vector<std::pair<int, int>> update_bounds_built();  // (threads, min blocks); [0]: default
int table_tiers_built();                                 // 1: the full capacity only

int64_t param_bytes();  // the kernel parameter space the launch plans are built for
int runtime_version();  // CUDART_VERSION the engine was compiled with (0 under the emulation)
// The CUDA version the installed driver supports (cudaDriverGetVersion: 12040 for 12.4; 0 when
// no driver is installed, and under the emulation).
int driver_version();

// What is wrong with running this build's CUDA engine on a device of compute capability
// cc_major.cc_minor under a driver of `driver` (cudaDriverGetVersion's form), for a build with
// CUDART_VERSION `runtime` and the architectures `archs` (CMAKE_CUDA_ARCHITECTURES, comma or
// semicolon separated); "" when nothing is. A pure function: checked when an engine is created
// on a device, and by the tests with any values.
std::string device_problem(int driver, int runtime, int cc_major, int cc_minor,
                           const std::string& archs);

// Test hooks of the emulation (fastopt._C_simt only; see simt::detail::Hooks): blocks below
// skip_below of kernels whose name contains one of `skip` are not run, launches of kernels named
// in `fail` fail.
void set_simt_hooks(const std::vector<std::string>& skip, int64_t skip_below,
                    const std::vector<std::string>& fail);

}  // namespace cuda
}  // namespace fastopt
