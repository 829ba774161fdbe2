// The CUDA engine's non-template parts: errors, devices, launch limits, the pipeline kernel and
// the engine factory.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <sstream>

#if !FASTOPT_SIMT
// the driver API's types only: its functions are reached through the runtime's driver entry
// points (nothing links libcuda; the runtime loads it)
#include <cuda.h>
#endif

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

std::mutex variants_mutex;

Variants read_variants() {
  Variants v;
  if (const char* b = std::getenv("FASTOPT_CUDA_UPDATE_BOUNDS"); b != nullptr && *b != '\0') {
    long long threads = 0, blocks = 0;
    char tail = 0;
    if (std::sscanf(b, "%lld,%lld%c", &threads, &blocks, &tail) != 2)
      throw std::invalid_argument(
          std::string("FASTOPT_CUDA_UPDATE_BOUNDS must be 'threads,blocks' (e.g. 256,3), got ") +
          b);
    v.update_threads = threads;
    v.update_min_blocks = blocks;
  }
  if (const char* t = std::getenv("FASTOPT_CUDA_TABLES"); t != nullptr && *t != '\0') {
    const std::string tables = t;
    if (tables != "full" && tables != "tiered")
      throw std::invalid_argument("FASTOPT_CUDA_TABLES must be 'full' or 'tiered', got " + tables);
    v.tiered = tables == "tiered";
  }
  v.combine_segment = env_int("FASTOPT_CUDA_COMBINE_SEGMENT");
  return v;
}

// The index in kUpdateBounds of v's update bounds, after checking v against the build.
int check_variants(const Variants& v) {
  int bounds = -1;
  if (v.update_threads == 0 && v.update_min_blocks == 0) bounds = 0;
  for (int i = 0; i < kNumUpdateBounds && bounds < 0; ++i)
    if (kUpdateBounds[i].threads == v.update_threads &&
        kUpdateBounds[i].min_blocks == v.update_min_blocks)
      bounds = i;
  if (bounds < 0) {
    std::string built;
    for (const Bounds& b : kUpdateBounds)
      built += " " + std::to_string(b.threads) + "," + std::to_string(b.min_blocks);
    throw std::invalid_argument("update bounds " + std::to_string(v.update_threads) + "," +
                                std::to_string(v.update_min_blocks) +
                                " were not compiled; this build has:" + built +
                                " (more with FASTOPT_CUDA_VARIANTS=ON)");
  }
  if (v.tiered != 0 && v.tiered != 1) throw std::invalid_argument("tiered must be 0 or 1");
  if (v.tiered && kTiers == 1)
    throw std::invalid_argument(
        "tiered launch tables were not compiled (build with FASTOPT_CUDA_VARIANTS=ON)");
  if (v.tiered && bounds != 0)
    throw std::invalid_argument("one launch variant at a time: tiered tables or update bounds");
  if (v.combine_segment < 0 || v.combine_segment > 0x7fffffff)
    throw std::invalid_argument("combine_segment must be in [0, 2^31)");
  return bounds;
}

Variants& variants_storage() {
  static Variants v = [] {
    const Variants x = read_variants();
    check_variants(x);
    return x;
  }();
  return v;
}

}  // namespace

Variants variants() {
  std::lock_guard<std::mutex> lock(variants_mutex);
  return variants_storage();
}

void set_variants(const Variants& v) {
  check_variants(v);
  std::lock_guard<std::mutex> lock(variants_mutex);
  variants_storage() = v;
}

std::vector<std::pair<int, int>> update_bounds_built() {
  std::vector<std::pair<int, int>> out;
  for (const Bounds& b : kUpdateBounds) out.emplace_back(b.threads, b.min_blocks);
  return out;
}

int table_tiers_built() {
  return kTiers;
}

ResolvedVariants resolve_variants() {
  const Variants v = variants();
  return ResolvedVariants{check_variants(v), v.tiered != 0, v.combine_segment};
}

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

#if !FASTOPT_SIMT
namespace {

// cuCtxGetCurrent / cuCtxSetCurrent from the driver the runtime loaded.
struct ContextApi {
  CUresult (*get)(CUcontext*) = nullptr;
  CUresult (*set)(CUcontext) = nullptr;
};

void* driver_symbol(const char* name) {
  void* fn = nullptr;
  cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
#if CUDART_VERSION >= 12050
  // both symbols are unchanged since CUDA 4.0: any ABI version from 12.0 on is theirs
  check(cudaGetDriverEntryPointByVersion(name, &fn, 12000, cudaEnableDefault, &found), name);
#else
  check(cudaGetDriverEntryPoint(name, &fn, cudaEnableDefault, &found), name);
#endif
  if (found != cudaDriverEntryPointSuccess || fn == nullptr)
    throw CudaError(std::string("fastopt CUDA engine: the driver has no ") + name);
  return fn;
}

const ContextApi& context_api() {
  static const ContextApi api = [] {
    ContextApi a;
    a.get = reinterpret_cast<CUresult (*)(CUcontext*)>(driver_symbol("cuCtxGetCurrent"));
    a.set = reinterpret_cast<CUresult (*)(CUcontext)>(driver_symbol("cuCtxSetCurrent"));
    return a;
  }();
  return api;
}

}  // namespace

DeviceGuard::DeviceGuard(int device) : device_(device) {
  if (device_ < 0) return;
  const ContextApi& api = context_api();
  CUcontext current = nullptr;
  if (api.get(&current) != CUDA_SUCCESS)
    throw CudaError("fastopt CUDA engine: cuCtxGetCurrent failed");
  // cudaGetDevice names the current context's device only when there is one; with none it
  // says 0, which must not be taken for "device 0 is current"
  int now = -1;
  if (current != nullptr) check(cudaGetDevice(&now), "cudaGetDevice");
  if (now == device_) return;                      // already there: nothing to change or restore
  check(cudaSetDevice(device_), "cudaSetDevice");  // device_'s primary context, made current
  previous_ = current;
  restore_ = true;
}

DeviceGuard::~DeviceGuard() {
  // the exact context the thread had, or none (then no primary context is created or kept
  // current on the caller's behalf)
  if (restore_) (void)context_api().set(static_cast<CUcontext>(previous_));
}
#else
// The emulation has one host "device" (index -1): nothing to select.
DeviceGuard::DeviceGuard(int device) : device_(device) {}
DeviceGuard::~DeviceGuard() {}
#endif

int driver_version() {
#if FASTOPT_SIMT
  return 0;
#else
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return v;
#endif
}

namespace {

std::string version_text(int v) {
  return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10);
}

// The oldest driver branch of a CUDA major version (NVIDIA's minor version compatibility).
std::string driver_branch(int major) {
  if (major == 12) return " (R525 or newer; R530+ for the 32 KB kernel parameters of 12.1)";
  if (major == 13) return " (R580 or newer)";
  return "";
}

}  // namespace

// The oldest driver (cudaDriverGetVersion's form) that runs a build of CUDA `runtime`.
int driver_needed(int runtime) {
  // minor version compatibility: a driver of the runtime's major version runs it; the 32 KB
  // kernel parameters the launch plans use need 12.1 on both sides
  return std::max(runtime / 1000 * 1000, 12010);
}

std::string device_problem(int driver, int runtime, int cc_major, int cc_minor,
                           const std::string& archs) {
  const std::string built = "fastopt's CUDA engine was built with CUDA " + version_text(runtime) +
                            " (its runtime linked statically, whatever CUDA torch uses)";
  const std::string remedy =
      "; update the NVIDIA driver, or build fastopt with a CUDA toolkit this driver supports "
      "(12.1 or newer; the one torch was built with, torch.version.cuda, is a safe choice): "
      "see 'CUDA engine requirements' in the README";
  if (driver <= 0) return built + ", and no NVIDIA driver was found" + remedy;
  const int needed = driver_needed(runtime);
  if (driver < needed)
    return built + ", which needs a driver supporting CUDA " + version_text(needed) +
           driver_branch(runtime / 1000) + "; this driver supports CUDA " + version_text(driver) +
           remedy;
  const int cc = cc_major * 10 + cc_minor;
  if (cc < 70)
    return "fastopt's CUDA engine needs a GPU of compute capability 7.0 or newer (its launches "
           "pass 32 KB kernel parameters); this one is " +
           std::to_string(cc_major) + "." + std::to_string(cc_minor);
  // machine code for the same major and an equal or lower minor runs as is; PTX of an equal or
  // lower architecture is compiled by the driver, which must then be as new as the toolkit
  bool sass = false, ptx = false, unknown = false;
  std::string list = archs;
  std::replace(list.begin(), list.end(), ',', ';');
  std::stringstream items(list);
  for (std::string item; std::getline(items, item, ';');) {
    if (item.empty()) continue;
    std::string kind = "both";
    const size_t dash = item.find('-');
    if (dash != std::string::npos) {
      kind = item.substr(dash + 1);
      item = item.substr(0, dash);
    }
    const bool specific = !item.empty() && (item.back() == 'a' || item.back() == 'f');
    if (specific) item.pop_back();
    if (item.empty() || item.find_first_not_of("0123456789") != std::string::npos) {
      unknown = true;  // all, all-major, native: not ours to second-guess
      continue;
    }
    const int a = std::stoi(item);
    if (kind != "virtual" && (specific ? a == cc : a / 10 == cc_major && a <= cc)) sass = true;
    if (kind != "real" && !specific && a <= cc) ptx = true;
  }
  if (sass || unknown) return "";
  const std::string device =
      "compute capability " + std::to_string(cc_major) + "." + std::to_string(cc_minor);
  if (ptx && driver >= runtime) return "";
  if (ptx)
    return "this GPU (" + device + ") runs fastopt's CUDA engine from PTX, which the driver " +
           "compiles only when it supports the toolkit's CUDA " + version_text(runtime) +
           " (this driver: " + version_text(driver) + "); update the driver, or build fastopt " +
           "for this GPU (FASTOPT_CUDA_ARCHS, e.g. " + std::to_string(cc) + "-real)";
  return "fastopt's CUDA engine was built for the architectures " + archs +
         ", none of which runs on this GPU (" + device +
         "); build it for this GPU (FASTOPT_CUDA_ARCHS, e.g. " + std::to_string(cc) + "-real)";
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

// The two-level combine's first level: block b folds chunk partials [b * segment, (b + 1) *
// segment) into out[b] (then the pipeline kernel folds those).
__global__ void __launch_bounds__(kBlockThreads)
    combine_partials_kernel(const double* partials, int64_t n, int64_t segment, NormMeasure m,
                            double* out) {
  const int64_t begin = int64_t(blockIdx.x) * segment;
  const int64_t end = min64(begin + segment, n);
  double acc = 0.0;
  for (int64_t i = begin + int64_t(threadIdx.x); i < end; i += int64_t(blockDim.x))
    acc = m.combine(acc, partials[i]);
  acc = block_reduce(acc, m);
  if (threadIdx.x == 0) out[blockIdx.x] = acc;
}

void launch_combine_partials(const double* partials, int64_t n, int64_t segment,
                             const NormMeasure& m, double* out, Launcher& launcher) {
  const int64_t blocks = (n + segment - 1) / segment;
  launcher([] { return std::string("combine_partials"); }, LaunchRecord{}, &combine_partials_kernel,
           dim3(unsigned(blocks)), dim3(kBlockThreads), partials, n, segment, m, out);
}

void launch_pipeline(const PipelineArgs& args, Launcher& launcher) {
  launcher([] { return std::string("pipeline"); }, LaunchRecord{}, &pipeline_kernel, dim3(1),
           dim3(kBlockThreads), args);
}

}  // namespace cuda

namespace cuda {
namespace {

#ifndef FASTOPT_CUDA_ARCHS
#define FASTOPT_CUDA_ARCHS ""
#endif

// Driver and device checked once per device, when the first engine on it is created: a driver
// too old for the statically linked runtime would otherwise fail at the first step (with
// cudaErrorInsufficientDriver) while torch, built for an older CUDA, works.
void check_device(int device) {
#if !FASTOPT_SIMT
  static std::mutex mutex;
  static std::vector<int> checked;
  std::lock_guard<std::mutex> lock(mutex);
  if (std::find(checked.begin(), checked.end(), device) != checked.end()) return;
  const int driver = driver_version();
  int major = 0, minor = 0;
  if (driver >= driver_needed(runtime_version())) {  // else the query fails: report the driver
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
          "reading the compute capability");
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device),
          "reading the compute capability");
  }
  const std::string problem =
      device_problem(driver, runtime_version(), major, minor, FASTOPT_CUDA_ARCHS);
  if (!problem.empty()) throw CudaError(problem + " (cuda:" + std::to_string(device) + ")");
  checked.push_back(device);
#else
  (void)device;
#endif
}

}  // namespace
}  // namespace cuda

std::unique_ptr<Engine> make_cuda_engine(const std::string& kind,
                                         const std::vector<TensorEntry>& entries, int device,
                                         int64_t chunk_elems) {
  if (device >= 0) cuda::check_device(device);
  std::unique_ptr<Engine> engine;
  if (!with_op(kind.c_str(), [&](auto op, OpId) {
        engine = cuda::make_op_engine<decltype(op)>(entries, device, chunk_elems);
      }))
    throw std::invalid_argument("unknown optimizer kind '" + kind + "'");
  return engine;
}

}  // namespace fastopt
