// The CUDA runtime as the engine sees it: the real one under nvcc, the host emulation (simt/)
// when the same sources are compiled by the host compiler for fastopt._C_simt. Launches go
// through launch(), which checks every launch and turns an error into an exception naming the
// kernel.
#pragma once

#include <stdexcept>
#include <string>
#include <type_traits>

#if FASTOPT_SIMT
#include "../simt/simt.h"
// Kernels take their (up to 32 KB) parameter struct by reference under the emulation, where a
// copy per emulated thread would dominate; on the GPU kernel parameters are values.
#define FASTOPT_KERNEL_ARG(...) const __VA_ARGS__&
#else
#include <cuda_runtime.h>
#define FASTOPT_KERNEL_ARG(...) const __VA_ARGS__
#endif

namespace fastopt {
namespace cuda {

#if FASTOPT_SIMT
constexpr const char* kBackend = "simt";
#else
constexpr const char* kBackend = "cuda";
#endif

// A CUDA error, as a Python RuntimeError (pybind11 translates std::runtime_error).
class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] void throw_error(const std::string& what, cudaError_t err);
inline void check(cudaError_t err, const char* what) {
  if (err != cudaSuccess) throw_error(what, err);
}

// CUDA_LAUNCH_BLOCKING=1 (as torch reads it): wait after every launch, so an error that happens
// while a kernel runs is reported with that kernel's name.
bool launch_blocking();

// Makes `device` current for the lifetime of the guard and restores what the thread had
// before. The current device is the thread's current driver context, state shared with torch
// (and anything else in the process; the runtime linked here is a separate copy of libcudart,
// but the driver and its per-thread context stack are one). The guard saves that context
// itself, not a device number: a thread with no current context gets "none" back, not device
// 0's primary context (cudaGetDevice reports 0 there, and setting it would create that
// context, half a GB on GPU 0 for every process of a multi-GPU job).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  bool restore_ = false;
  void* previous_ = nullptr;  // the CUcontext current before (nullptr: none); emulation: device
};

// Launches kernel<<<grid, block, 0, stream>>>(args...) and checks it. `name` is a callable
// returning the kernel's name, evaluated only for an error message.
template <class Name, class... P, class... A>
void launch(Name&& name, void (*kernel)(P...), dim3 grid, dim3 block, cudaStream_t stream,
            const A&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "one argument per kernel parameter");
  static_assert((std::is_same_v<std::remove_cv_t<std::remove_reference_t<P>>, A> && ...),
                "arguments must have the kernel's parameter types exactly");
#if FASTOPT_SIMT
  (void)stream;
  const std::string label = name();
  const cudaError_t err = simt::launch(label.c_str(), kernel, grid, block, args...);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    throw CudaError("fastopt: CUDA kernel '" + label + "' failed: " + cudaGetErrorString(err) +
                    " (" + cudaGetErrorName(err) + "; emulation: " + simt::last_failure() + ")");
  }
#else
  // cudaLaunchKernel reads each parameter through a pointer to a value of the parameter's type.
  void* pointers[] = {const_cast<void*>(static_cast<const void*>(&args))...};
  cudaError_t err =
      cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, pointers, 0, stream);
  if (err == cudaSuccess && launch_blocking()) {
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    err = cudaStreamIsCapturing(stream, &capturing);
    if (err == cudaSuccess && capturing == cudaStreamCaptureStatusNone)
      err = cudaStreamSynchronize(stream);
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: the exception reports it
    throw CudaError("fastopt: CUDA kernel '" + std::string(name()) +
                    "' failed: " + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
  }
#endif
}

}  // namespace cuda
}  // namespace fastopt
