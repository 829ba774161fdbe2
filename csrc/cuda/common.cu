// The CUDA engine's non-template parts: errors, devices, launch limits, the pipeline kernel and
// the engine factory.
#include <cstdlib>
#include <mutex>

#include "../core/ops.h"
#include "engine.cuh"

namespace fastopt {
namespace cuda {

// Each op's engine is instantiated in its generated engine_<op>.cu, not here.
#define FASTOPT_EXTERN_ENGINE(Struct, name)                       \
  extern template std::unique_ptr<Engine> make_op_engine<Struct>( \
      const std::vector<TensorEntry>& entries, int device, int64_t chunk_elems);
FASTOPT_OPS(FASTOPT_EXTERN_ENGINE)
#undef FASTOPT_EXTERN_ENGINE

namespace {

int64_t env_int(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return 0;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end != '\0' || x < 0)
    throw std::invalid_argument(std::string(name) + " must be a non-negative integer, got " + v);
  return int64_t(x);
}

std::mutex limits_mutex;
LaunchLimits& limits_storage() {
  static LaunchLimits limits = [] {
    LaunchLimits l;
    l.max_tensors = env_int("FASTOPT_CUDA_MAX_TENSORS");
    l.max_blocks = env_int("FASTOPT_CUDA_MAX_BLOCKS");
    l.chunk_elems = env_int("FASTOPT_CUDA_CHUNK_ELEMS");
    return l;
  }();
  return limits;
}

}  // namespace

LaunchLimits launch_limits() {
  std::lock_guard<std::mutex> lock(limits_mutex);
  return limits_storage();
}

void set_launch_limits(const LaunchLimits& limits) {
  if (limits.max_tensors < 0 || limits.max_blocks < 0 || limits.chunk_elems < 0 ||
      limits.chunk_elems > kMaxChunkElems)
    throw std::invalid_argument("launch limits must be >= 0 (0: default), chunk_elems <= 2^30");
  std::lock_guard<std::mutex> lock(limits_mutex);
  limits_storage() = limits;
}

Limits resolve_limits(int64_t chunk_elems) {
  const LaunchLimits l = launch_limits();
  Limits r;
  r.chunk_elems = chunk_elems > 0     ? chunk_elems
                  : l.chunk_elems > 0 ? l.chunk_elems
                                      : kDefaultChunkElems;
  if (r.chunk_elems > kMaxChunkElems)
    throw std::invalid_argument("CUDA engine: chunk_elems must be at most 2^30");
  r.max_tensors = l.max_tensors;
  r.max_blocks = l.max_blocks > 0 ? std::min(l.max_blocks, kMaxGridBlocks) : kMaxGridBlocks;
  return r;
}

int64_t param_bytes() {
  return kParamBytes;
}

int runtime_version() {
#if FASTOPT_SIMT
  return 0;
#else
  return CUDART_VERSION;
#endif
}

void set_simt_hooks(const std::vector<std::string>& skip, int64_t skip_below,
                    const std::vector<std::string>& fail) {
#if FASTOPT_SIMT
  simt::detail::set_hooks(simt::detail::Hooks{skip, skip_below, fail});
#else
  (void)skip;
  (void)skip_below;
  (void)fail;
  throw std::logic_error("test hooks exist only in the SIMT emulation");
#endif
}

void throw_error(const std::string& what, cudaError_t err) {
  (void)cudaGetLastError();
  throw CudaError("fastopt CUDA engine: " + what + ": " + cudaGetErrorString(err) + " (" +
                  cudaGetErrorName(err) + ")");
}

bool launch_blocking() {
  static const bool blocking = [] {
    const char* v = std::getenv("CUDA_LAUNCH_BLOCKING");
    return v != nullptr && std::string(v) == "1";
  }();
  return blocking;
}

DeviceGuard::DeviceGuard(int device) : device_(device) {
  if (device_ < 0) return;  // the emulation's host "device"
  check(cudaGetDevice(&previous_), "cudaGetDevice");
  if (previous_ != device_) check(cudaSetDevice(device_), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() {
  if (device_ >= 0 && previous_ >= 0 && previous_ != device_) (void)cudaSetDevice(previous_);
}

// One block: the total norm from the chunk partials, then norm_out, found_inf and the values
// the update reads (the CPU engine's pipeline, on the device).
__global__ void __launch_bounds__(kBlockThreads) pipeline_kernel(PipelineArgs a) {
  const float inv_scale = a.loss_scale != nullptr ? float(1.0 / double(*a.loss_scale)) : 1.f;
  if (!a.reduce && a.total_in == nullptr) {
    if (threadIdx.x == 0) *a.state = PipelineState{inv_scale, 1.f, 0, 0};
    return;
  }
  double acc = 0.0;
  if (a.total_in != nullptr) {
    acc = *a.total_in;
  } else {
    for (int64_t i = threadIdx.x; i < a.n_chunks; i += blockDim.x)
      acc = a.measure.combine(acc, a.partials[i]);
    acc = block_reduce(acc, a.measure);
  }
  if (threadIdx.x != 0) return;
  if (a.total_out != nullptr) {
    *a.total_out = acc;
    return;
  }
  const float norm = float(a.measure.finish(acc));
  const bool nonfinite = !finite(norm);
  if (a.norm_out != nullptr) *a.norm_out = norm;
  int32_t skip = 0;
  if (a.found_inf != nullptr) {
    *a.found_inf = nonfinite ? 1.f : 0.f;
    skip = nonfinite;
  }
  *a.state =
      PipelineState{inv_scale, clip_coefficient(norm, a.max_norm, a.rescale_max_norm), skip, 0};
}

void launch_pipeline(const PipelineArgs& args, Launcher& launcher) {
  launcher([] { return std::string("pipeline"); }, LaunchRecord{}, &pipeline_kernel, dim3(1),
           dim3(kBlockThreads), args);
}

}  // namespace cuda

std::unique_ptr<Engine> make_cuda_engine(const std::string& kind,
                                         const std::vector<TensorEntry>& entries, int device,
                                         int64_t chunk_elems) {
  std::unique_ptr<Engine> engine;
  if (!with_op(kind.c_str(), [&](auto op, OpId) {
        engine = cuda::make_op_engine<decltype(op)>(entries, device, chunk_elems);
      }))
    throw std::invalid_argument("unknown optimizer kind '" + kind + "'");
  return engine;
}

}  // namespace fastopt
