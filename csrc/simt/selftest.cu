// Self-test kernels of the host emulation (fastopt._C_simt.simt_selftest), checked by
// tests/test_simt.py: thread and block indices, barriers with shared memory, shuffles, votes,
// the engine's block reduction, atomics, and misuse the emulation must report. Plain CUDA: only
// built into the emulation module, but the same source would run on a GPU.
#include <array>
#include <cstdint>
#include <string>

#include "../cuda/kernels.cuh"

namespace fastopt {

namespace {

constexpr unsigned kFull = 0xffffffffu;

__device__ int64_t linear_block() {
  return blockIdx.x + int64_t(gridDim.x) * (blockIdx.y + int64_t(gridDim.y) * blockIdx.z);
}
__device__ int64_t linear_thread() {
  return threadIdx.x + int64_t(blockDim.x) * (threadIdx.y + int64_t(blockDim.y) * threadIdx.z);
}
__device__ int64_t global_thread() {
  return linear_block() * (int64_t(blockDim.x) * blockDim.y * blockDim.z) + linear_thread();
}

// 12 values per thread: threadIdx, blockIdx, blockDim, gridDim.
__global__ void ids_kernel(int32_t* out, int64_t, int32_t) {
  int32_t* o = out + global_thread() * 12;
  const unsigned v[12] = {threadIdx.x, threadIdx.y, threadIdx.z, blockIdx.x, blockIdx.y, blockIdx.z,
                          blockDim.x,  blockDim.y,  blockDim.z,  gridDim.x,  gridDim.y,  gridDim.z};
  for (int k = 0; k < 12; ++k) o[k] = int32_t(v[k]);
}

// Inclusive scan of (t + 1 + block) within each block (Hillis-Steele): a barrier per round, and
// shared memory written by one thread and read by another.
__global__ void scan_kernel(int32_t* out, int64_t, int32_t) {
  __shared__ int32_t buf[2][1024];
  const int t = int(threadIdx.x), n = int(blockDim.x);
  int cur = 0;
  buf[0][t] = t + 1 + int(blockIdx.x);
  __syncthreads();
  for (int offset = 1; offset < n; offset <<= 1) {
    int32_t v = buf[cur][t];
    if (t >= offset) v += buf[cur][t - offset];
    buf[1 - cur][t] = v;
    cur = 1 - cur;
    __syncthreads();
  }
  out[blockIdx.x * n + t] = buf[cur][t];
}

// 5 shuffles of v = 3t + 1 per thread: down, up, xor, indexed (param) and down in segments of 8.
__global__ void shuffle_kernel(float* out, int64_t, int32_t param) {
  const float v = float(threadIdx.x * 3 + 1);
  float* o = out + global_thread() * 5;
  o[0] = __shfl_down_sync(kFull, v, unsigned(param));
  o[1] = __shfl_up_sync(kFull, v, unsigned(param));
  o[2] = __shfl_xor_sync(kFull, v, param);
  o[3] = __shfl_sync(kFull, v, param);
  o[4] = __shfl_down_sync(kFull, v, unsigned(param), 8);
}

// Warp sums of doubles by xor shuffles (every lane gets the sum).
__global__ void warp_sum_kernel(double* out, int64_t, int32_t) {
  double v = double(threadIdx.x) + 0.5;
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(kFull, v, m);
  out[global_thread()] = v;
}

// Votes on p = (t % param == 0): ballot, any, all(!p).
__global__ void vote_kernel(int64_t* out, int64_t, int32_t param) {
  const bool p = int(threadIdx.x) % param == 0;
  int64_t* o = out + global_thread() * 3;
  o[0] = int64_t(__ballot_sync(kFull, p));
  o[1] = __any_sync(kFull, p);
  o[2] = __all_sync(kFull, !p);
}

// Only lanes 0-15 of each warp shuffle (mask 0xffff, segments of 16); the others do not.
__global__ void partial_mask_kernel(float* out, int64_t, int32_t) {
  const int lane = int(threadIdx.x) % 32;
  float v = -1.f;
  if (lane < 16) v = __shfl_down_sync(0xffffu, float(threadIdx.x), 1, 16);
  __syncwarp();
  out[global_thread()] = v;
}

// The engine's block_reduce over n doubles (param: NormType); result per block after the data.
__global__ void reduce_kernel(double* data, int64_t n, int32_t type) {
  const NormMeasure m{NormType(type), 3.0};
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc = m.combine(acc, m.fold(data[i]));
  acc = cuda::block_reduce(acc, m);
  if (threadIdx.x == 0) data[n + blockIdx.x] = acc;
}

// Atomics from every thread: counter, max of ids, CAS increments, float sum.
__global__ void atomic_kernel(int32_t* out, int64_t, int32_t) {
  atomicAdd(out, 1);
  atomicMax(out + 1, int32_t(global_thread()));
  int32_t old = out[2];
  for (;;) {
    const int32_t seen = atomicCAS(out + 2, old, old + 2);
    if (seen == old) break;
    old = seen;
  }
  atomicAdd(reinterpret_cast<float*>(out + 3), 0.5f);
}

// Misuse the emulation must report (undefined behaviour on a GPU):
__global__ void divergent_barrier_kernel(int32_t* out, int64_t, int32_t) {
  if (threadIdx.x < blockDim.x / 2) __syncthreads();
  out[global_thread()] = 1;
}
__global__ void exited_barrier_kernel(int32_t* out, int64_t, int32_t) {
  if (threadIdx.x == 0) return;
  __syncthreads();
  out[global_thread()] = 1;
}
__global__ void divergent_shuffle_kernel(float* out, int64_t, int32_t) {
  const float v = float(threadIdx.x);
  out[global_thread()] =
      threadIdx.x % 2 ? __shfl_xor_sync(kFull, v, 1) : __shfl_down_sync(kFull, v, 1);
}
__global__ void inactive_lane_kernel(float* out, int64_t, int32_t) {
  const int lane = int(threadIdx.x) % 32;
  if (lane < 16) out[global_thread()] = __shfl_sync(0xffffu, float(lane), 20);
}
__global__ void outside_mask_kernel(float* out, int64_t, int32_t) {
  out[global_thread()] = __shfl_sync(0x1u, 1.f, 0);
}

template <class T>
void run(const std::string& name, void (*kernel)(T*, int64_t, int32_t), dim3 grid, dim3 block,
         int64_t data, int64_t n, int32_t param) {
  cuda::launch([&] { return name; }, kernel, grid, block, nullptr, reinterpret_cast<T*>(data), n,
               param);
}

}  // namespace

void simt_selftest(const std::string& kernel, std::array<unsigned, 3> g, std::array<unsigned, 3> b,
                   int64_t data, int64_t n, int32_t param) {
  const dim3 grid(g[0], g[1], g[2]), block(b[0], b[1], b[2]);
  if (kernel == "ids") return run(kernel, &ids_kernel, grid, block, data, n, param);
  if (kernel == "scan") return run(kernel, &scan_kernel, grid, block, data, n, param);
  if (kernel == "shuffle") return run(kernel, &shuffle_kernel, grid, block, data, n, param);
  if (kernel == "warp_sum") return run(kernel, &warp_sum_kernel, grid, block, data, n, param);
  if (kernel == "vote") return run(kernel, &vote_kernel, grid, block, data, n, param);
  if (kernel == "partial_mask")
    return run(kernel, &partial_mask_kernel, grid, block, data, n, param);
  if (kernel == "reduce") return run(kernel, &reduce_kernel, grid, block, data, n, param);
  if (kernel == "atomic") return run(kernel, &atomic_kernel, grid, block, data, n, param);
  if (kernel == "divergent_barrier")
    return run(kernel, &divergent_barrier_kernel, grid, block, data, n, param);
  if (kernel == "exited_barrier")
    return run(kernel, &exited_barrier_kernel, grid, block, data, n, param);
  if (kernel == "divergent_shuffle")
    return run(kernel, &divergent_shuffle_kernel, grid, block, data, n, param);
  if (kernel == "inactive_lane")
    return run(kernel, &inactive_lane_kernel, grid, block, data, n, param);
  if (kernel == "outside_mask")
    return run(kernel, &outside_mask_kernel, grid, block, data, n, param);
  throw std::invalid_argument("no self-test kernel '" + kernel + "'");
}

}  // namespace fastopt
