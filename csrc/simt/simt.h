// Host emulation of the CUDA execution model, so that .cu sources compile with the host C++
// compiler and run on the CPU (the test-only module fastopt._C_simt).
//
// A launch runs its blocks one after another on the calling thread. The threads of a block are
// fibers (own stacks, cooperative switches) that run until they finish or reach a barrier:
// __syncthreads() waits for every thread of the block, and warp operations (shuffles, votes,
// __syncwarp) wait for every lane named in their mask, so lanes run apart as under independent
// thread scheduling and no implicit warp synchrony is assumed. __shared__ variables are static
// thread_local: one copy per block in flight, shared by its fibers. Misuse that is undefined
// behaviour on a GPU is an error here: a barrier some threads never reach (deadlock), warp
// operations with different masks or from a lane outside the mask, reading an inactive lane.
// Errors end the launch and are reported as a cudaError_t by cudaGetLastError().
//
// Supported: dim3 grids/blocks (blockDim up to 1024), threadIdx/blockIdx/blockDim/gridDim,
// warpSize, __syncthreads, __syncwarp, __shfl_sync/_up/_down/_xor (any trivially copyable type of
// at most 8 bytes), __ballot_sync, __any_sync, __all_sync, atomics on 32/64-bit integers and
// floats, __threadfence; and the runtime calls the engine makes (errors, devices, async copies).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#define FASTOPT_SIMT_EMULATION 1

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __shared__ static thread_local

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

// ---- the runtime API subset (numbers as in the CUDA runtime) ----------------------------------
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInvalidDevice = 101,
  cudaErrorLaunchFailure = 719,
};
enum cudaMemcpyKind : int {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
};
enum cudaStreamCaptureStatus : int {
  cudaStreamCaptureStatusNone = 0,
  cudaStreamCaptureStatusActive = 1,
};
using cudaStream_t = struct CUstream_st*;

const char* cudaGetErrorString(cudaError_t e);
const char* cudaGetErrorName(cudaError_t e);
cudaError_t cudaGetLastError();  // returns and clears the last error of this host thread
cudaError_t cudaPeekAtLastError();
cudaError_t cudaGetDevice(int* device);
cudaError_t cudaSetDevice(int device);  // one emulated device: 0
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaStreamIsCapturing(cudaStream_t stream, cudaStreamCaptureStatus* status);

namespace simt {

constexpr int kWarpSize = 32;
constexpr unsigned kMaxBlockThreads = 1024;

struct BlockInfo {
  uint3 block_idx;
  dim3 block_dim;
  dim3 grid_dim;
};

// The running emulated thread.
struct Thread {
  uint3 thread_idx;
  unsigned linear;  // x + y * blockDim.x + z * blockDim.x * blockDim.y
  const BlockInfo* block;
};

namespace detail {

extern thread_local Thread* current_thread;

inline const Thread& current() {
  return *current_thread;
}

void sync_block();
// Waits for every lane of mask (which must include the caller) at the same warp operation;
// value is this lane's contribution, the result the 32 contributions of the operation.
const uint64_t* warp_exchange(unsigned mask, uint64_t value, const char* op);
[[noreturn]] void fail(const std::string& message);

using Body = void (*)(void* ctx);
cudaError_t run_grid(const char* name, dim3 grid, dim3 block, Body body, void* ctx);

// Test hooks, for kernels whose name contains one of the given strings: blocks with a linear
// index below `skip_below` are not run (chunk arithmetic of huge tensors on small data), and
// launches of `fail` kernels fail (error reporting). Empty lists turn them off.
struct Hooks {
  std::vector<std::string> skip;
  int64_t skip_below = 0;
  std::vector<std::string> fail;
};
void set_hooks(const Hooks& hooks);

template <class T>
uint64_t to_bits(T v) {
  static_assert(std::is_trivially_copyable_v<T> && sizeof(T) <= 8, "shuffle of a 1-8 byte value");
  uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
T from_bits(uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

inline unsigned lane_id() {
  return current().linear % kWarpSize;
}

template <class T>
T shuffle(unsigned mask, T v, int src, const char* op) {
  const uint64_t* all = warp_exchange(mask, to_bits(v), op);
  if ((mask >> src & 1u) == 0)
    fail(std::string(op) + ": lane " + std::to_string(lane_id()) + " reads inactive lane " +
         std::to_string(src));
  return from_bits<T>(all[src]);
}

}  // namespace detail

// What went wrong in the last failed launch of this host thread (the cudaError_t says less).
const std::string& last_failure();

// Runs kernel(args...) over the grid; a synchronous launch (name: for errors and test hooks).
// The kernel's parameters may be references to the caller's arguments (FASTOPT_KERNEL_ARG in
// cuda/runtime.h): a large parameter struct is then not copied for every emulated thread.
template <class... P, class... A>
cudaError_t launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) {
  auto call = [&]() { kernel(std::forward<A>(args)...); };
  using Call = decltype(call);
  return detail::run_grid(name, grid, block, [](void* c) { (*static_cast<Call*>(c))(); }, &call);
}

}  // namespace simt

#define threadIdx (::simt::detail::current().thread_idx)
#define blockIdx (::simt::detail::current().block->block_idx)
#define blockDim (::simt::detail::current().block->block_dim)
#define gridDim (::simt::detail::current().block->grid_dim)
#define warpSize (::simt::kWarpSize)

inline void __syncthreads() {
  ::simt::detail::sync_block();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  ::simt::detail::warp_exchange(mask, 0, "__syncwarp");
}
inline void __threadfence() {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

template <class T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = warpSize) {
  const int lane = int(::simt::detail::lane_id());
  const int src = (lane & ~(width - 1)) + (src_lane & (width - 1));
  return ::simt::detail::shuffle(mask, v, src, "__shfl_sync");
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = int(::simt::detail::lane_id());
  const int src = (lane & (width - 1)) + int(delta) < width ? lane + int(delta) : lane;
  return ::simt::detail::shuffle(mask, v, src, "__shfl_down_sync");
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = warpSize) {
  const int lane = int(::simt::detail::lane_id());
  const int src = (lane & (width - 1)) >= int(delta) ? lane - int(delta) : lane;
  return ::simt::detail::shuffle(mask, v, src, "__shfl_up_sync");
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = warpSize) {
  const int lane = int(::simt::detail::lane_id());
  const int src = lane ^ lane_mask;
  const int segment = lane & ~(width - 1);
  return ::simt::detail::shuffle(mask, v, src >= segment && src < segment + width ? src : lane,
                                 "__shfl_xor_sync");
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
  const uint64_t* all = ::simt::detail::warp_exchange(mask, predicate != 0, "__ballot_sync");
  unsigned out = 0;
  for (int l = 0; l < ::simt::kWarpSize; ++l)
    if ((mask >> l & 1u) != 0 && all[l] != 0) out |= 1u << l;
  return out;
}
inline int __any_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) != 0;
}
inline int __all_sync(unsigned mask, int predicate) {
  return __ballot_sync(mask, predicate) == mask;
}
inline int __popc(unsigned x) {
  return __builtin_popcount(x);
}
inline int __ffs(int x) {
  return __builtin_ffs(x);
}

// Atomics: blocks run one after another, but several host threads may launch at once.
template <class T>
T atomicAdd(T* address, T v) {
  if constexpr (std::is_floating_point_v<T>) {
    T old, desired;
    __atomic_load(address, &old, __ATOMIC_RELAXED);
    do {
      desired = old + v;
    } while (!__atomic_compare_exchange(address, &old, &desired, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED));
    return old;
  } else {
    return __atomic_fetch_add(address, v, __ATOMIC_SEQ_CST);
  }
}
template <class T>
T atomicSub(T* address, T v) {
  return __atomic_fetch_sub(address, v, __ATOMIC_SEQ_CST);
}
template <class T>
T atomicExch(T* address, T v) {
  T old;
  __atomic_exchange(address, &v, &old, __ATOMIC_SEQ_CST);
  return old;
}
template <class T>
T atomicCAS(T* address, T compare, T v) {
  __atomic_compare_exchange(address, &compare, &v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
  return compare;  // the old value either way
}
template <class T>
T atomicMax(T* address, T v) {
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (old < v && !__atomic_compare_exchange_n(address, &old, v, false, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
T atomicMin(T* address, T v) {
  T old = __atomic_load_n(address, __ATOMIC_RELAXED);
  while (v < old && !__atomic_compare_exchange_n(address, &old, v, false, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_RELAXED)) {
  }
  return old;
}
template <class T>
T atomicOr(T* address, T v) {
  return __atomic_fetch_or(address, v, __ATOMIC_SEQ_CST);
}
template <class T>
T atomicAnd(T* address, T v) {
  return __atomic_fetch_and(address, v, __ATOMIC_SEQ_CST);
}
