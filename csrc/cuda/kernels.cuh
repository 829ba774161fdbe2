// The kernels of the CUDA engine and their launch parameters. Compiled by nvcc for the GPU and,
// unchanged, by the host compiler under the emulation of simt/ (fastopt._C_simt).
//
// Launch plans follow torch's MultiTensorApply: every tensor is cut into fixed-size chunks and
// one block handles one chunk. The tensors of a launch are described in its kernel parameters
// (CUDA 12.1+ allows 32 KB), so a step needs no host-to-device copy: block b belongs to the
// tensor t with block_start[t] <= b < block_start[t + 1] (a binary search), and offsets are
// 64-bit, so a tensor may have more than 2^31 elements. Whether a chunk uses 16-byte accesses is
// decided per chunk from its pointers' alignment; the rest use a scalar path.
//
// Per-step values computed on the device live in a workspace (see engine.cuh): prepared
// per-tensor arguments, first-step flags, per-chunk norm partials and the pipeline's scalars.
// Every reduction is a fixed tree (no float atomics), so results are deterministic.
#pragma once

#include <cstdint>
#include <utility>

#include "../core/element.h"
#include "../core/norms.h"
#include "../core/quant8.h"
#include "../core/table.h"
#include "runtime.h"

#define FASTOPT_DEVICE __device__ __forceinline__

namespace fastopt {
namespace cuda {

constexpr int kBlockThreads = 512;    // chunk kernels and the pipeline kernel
constexpr int kTensorThreads = 256;   // kernels with one block per tensor
constexpr int kPrepareThreads = 128;  // prepare without norms: one thread per tensor
constexpr int kWarp = 32;
constexpr int kIlp = 4;  // elements in flight per thread on the scalar path
// Kernel parameter space since CUDA 12.1 on Volta and newer; launch structs leave room for the
// kernels' other parameters.
constexpr int kParamBytes = 32764;
constexpr int kStructBytes = kParamBytes - 256;
constexpr int64_t kDefaultChunkElems = kCudaChunkElems;
constexpr int64_t kMaxChunkElems = int64_t(1) << 30;  // chunk-local indices are int
constexpr int64_t kMaxGridBlocks = 0x7fffffff;

// ---- launch variants -------------------------------------------------------------------------
// Choices to be measured on a GPU rather than guessed. Builds with FASTOPT_CUDA_VARIANTS (the
// emulation always) compile, next to the default launches, update kernels of smaller blocks
// (kUpdateBounds) and launch structs of smaller capacities (kTiers: a launch of a few tensors
// then passes 4 KB or 512 bytes of kernel parameters, not 32 KB). The default update kernels
// take 102-118 registers at 512 threads (one block per SM); smaller blocks of the same kernels
// let kernels of fewer registers fit more warps per SM. Register caps do not come free: with
// nvcc 13, __launch_bounds__ (256, 3), (192, 3), (128, 5) and (256, 4), i.e. at most 80-112
// registers, spill in the 16-bit Adam kernels on sm_80 and sm_90, so none is compiled. Which
// variant runs is chosen per process (Variants in api.h, FASTOPT_CUDA_* variables); the
// two-level combine of the pipeline's total norm needs no extra build.
struct Bounds {
  int threads;
  int min_blocks;  // __launch_bounds__'s blocks per SM: caps the registers at 64K/(threads*this)
};
#if FASTOPT_CUDA_VARIANTS
constexpr Bounds kUpdateBounds[] = {{kBlockThreads, 1}, {256, 1}, {128, 1}};
constexpr int kTiers = 3;
#else
constexpr Bounds kUpdateBounds[] = {{kBlockThreads, 1}};
constexpr int kTiers = 1;
#endif
constexpr int kNumUpdateBounds = int(sizeof(kUpdateBounds) / sizeof(kUpdateBounds[0]));
// Tensors per launch of tier t of a launch struct whose full capacity is `full`: 1/8 per tier.
constexpr int tier_capacity(int full, int t) {
  return t == 0 ? full : (full >> (3 * t)) > 0 ? (full >> (3 * t)) : 1;
}

// Pipeline values of one step, written by pipeline_kernel, read by the later kernels.
struct PipelineState {
  float inv_scale;
  float clip_coef;
  int32_t skip;  // a grad was inf/nan and found_inf was requested: the step is a no-op
  int32_t pad;
};

// The factor a norm kernel applies to its values before folding them.
struct ScaleSource {
  float value;
  const float* loss_scale;        // else 1 / *loss_scale (the pipeline's unscale), or
  const PipelineState* pipeline;  // else inv_scale * clip_coef of this step
  FASTOPT_HD float resolve() const {
    if (pipeline != nullptr) return pipeline->inv_scale * pipeline->clip_coef;
    if (loss_scale != nullptr) return float(1.0 / double(*loss_scale));  // as the CPU engine
    return value;
  }
};

// Blocks of a chunk-grid launch.
template <int N>
struct ChunkGrid {
  int32_t n;  // tensors
  int32_t chunk_elems;
  int32_t block_start[N + 1];
  int32_t chunk_base[N];  // index of the tensor's first chunk among the step's active chunks
  int64_t numel[N];
};

// A tensor's param store (precision.h) as a launch carries it, with the step's rounding values.
struct ParamSlot {
  void* aux;
  ParamMode mode;
  uint32_t seed, tensor, step;
};

template <int N, int S>
struct UpdateLaunch {
  template <int M>
  using Sized = UpdateLaunch<M, S>;
  ChunkGrid<N> grid;
  void* param[N];
  const void* grad[N];
  void* state[S][N];
  int32_t slot[N];  // entry index: prepared arguments
  ParamSlot store[N];
};

// The update of tensors with 8-bit states (quant8.h): codes and absmax per state.
template <int N, int S>
struct QuantUpdateLaunch {
  ChunkGrid<N> grid;
  void* param[N];
  const void* grad[N];
  uint8_t* codes[S][N];
  float* absmax[S][N];
  int32_t slot[N];
  ParamSlot store[N];
};

template <int N>
struct NormLaunch {
  template <int M>
  using Sized = NormLaunch<M>;
  ChunkGrid<N> grid;
  const void* x[N];
  NormMeasure measure;
  ScaleSource scale;
  double* partials;  // [step chunk]
};

template <int N, int K>
struct PrepareLaunch {
  template <int M>
  using Sized = PrepareLaunch<M, K>;
  int32_t n;
  double hyper[N][K];  // rows: the groups of this launch's tensors
  const float* lr[N];  // per row: a device lr replacing hyper[row][kLr], or nullptr
  float* step[N];
  int32_t row[N];
  int32_t slot[N];
};

template <int N>
struct CombineLaunch {
  template <int M>
  using Sized = CombineLaunch<M>;
  int32_t n;
  int32_t chunk_base[N];
  int32_t chunks[N];
  int32_t out[N];
  uint32_t tensor_id[N];  // adapt: where its sums are in GradPipeline::tensor_out / tensor_in
};

// A launch struct's first n tensors in a struct of capacity M >= n (the smaller tiers).
template <int M, int N>
void resize(ChunkGrid<M>& r, const ChunkGrid<N>& g) {
  r.n = g.n;
  r.chunk_elems = g.chunk_elems;
  for (int i = 0; i <= g.n; ++i) r.block_start[i] = g.block_start[i];
  for (int i = 0; i < g.n; ++i) {
    r.chunk_base[i] = g.chunk_base[i];
    r.numel[i] = g.numel[i];
  }
}
template <int M, int N, int S>
void resize(UpdateLaunch<M, S>& r, const UpdateLaunch<N, S>& L) {
  resize(r.grid, L.grid);
  for (int i = 0; i < L.grid.n; ++i) {
    r.param[i] = L.param[i];
    r.grad[i] = L.grad[i];
    for (int k = 0; k < S; ++k) r.state[k][i] = L.state[k][i];
    r.slot[i] = L.slot[i];
    r.store[i] = L.store[i];
  }
}
template <int M, int N>
void resize(NormLaunch<M>& r, const NormLaunch<N>& L) {
  resize(r.grid, L.grid);
  for (int i = 0; i < L.grid.n; ++i) r.x[i] = L.x[i];
  r.measure = L.measure;
  r.scale = L.scale;
  r.partials = L.partials;
}
template <int M, int N, int K>
void resize(PrepareLaunch<M, K>& r, const PrepareLaunch<N, K>& L) {
  r.n = L.n;
  for (int i = 0; i < L.n; ++i) {  // rows: at most one per tensor
    for (int k = 0; k < K; ++k) r.hyper[i][k] = L.hyper[i][k];
    r.lr[i] = L.lr[i];
    r.step[i] = L.step[i];
    r.row[i] = L.row[i];
    r.slot[i] = L.slot[i];
  }
}
template <int M, int N>
void resize(CombineLaunch<M>& r, const CombineLaunch<N>& L) {
  r.n = L.n;
  for (int i = 0; i < L.n; ++i) {
    r.chunk_base[i] = L.chunk_base[i];
    r.chunks[i] = L.chunks[i];
    r.out[i] = L.out[i];
    r.tensor_id[i] = L.tensor_id[i];
  }
}

// `full` (capacity N) as a launch of capacity M: itself, or a copy of its tensors.
template <int M, int N, class L>
decltype(auto) sized(const L& full) {
  if constexpr (M == N) {
    return (full);
  } else {
    typename L::template Sized<M> r;
    resize(r, full);
    return r;
  }
}

struct PipelineArgs {
  const double* partials;
  int64_t n_chunks;
  NormMeasure measure;
  int32_t reduce;
  const float* loss_scale;
  double max_norm;
  double rescale_max_norm;
  float* norm_out;
  float* found_inf;
  PipelineState* state;
  const double* total_in;  // every process's folded total, instead of the partials
  double* total_out;       // only reduce: this process's folded total goes here
};

// Launch capacities: as many tensors as the parameter space holds.
template <int S>
constexpr int kUpdateTensors =
    (kStructBytes - 64) / (4 + 4 + 8 + 8 + 8 + 8 * S + 4 + int(sizeof(ParamSlot)));
constexpr int kNormTensors = (kStructBytes - 128) / (4 + 4 + 8 + 8);
template <int S>
constexpr int kQuantUpdateTensors =
    (kStructBytes - 64) / (4 + 4 + 8 + 8 + 8 + 16 * S + 4 + int(sizeof(ParamSlot)));
template <int K>
constexpr int kPrepareTensors = (kStructBytes - 64) / (8 * K + 8 + 8 + 4 * 2);
constexpr int kCombineTensors = (kStructBytes - 64) / (4 * 4);

FASTOPT_HD bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

FASTOPT_HD int64_t min64(int64_t a, int64_t b) {
  return a < b ? a : b;
}

FASTOPT_HD bool finite(float x) {
  return (float_bits(x) & 0x7f800000u) != 0x7f800000u;
}

// The tensor of block b: the last t with block_start[t] <= b (tensors without chunks are never
// in a chunk grid).
FASTOPT_HD int find_tensor(const int32_t* block_start, int n, int32_t b) {
  int lo = 0, hi = n - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (block_start[mid] <= b)
      lo = mid;
    else
      hi = mid - 1;
  }
  return lo;
}

// The position of a block in its launch: tensor, chunk of the tensor, first element, size.
struct ChunkPos {
  int t;
  int chunk;
  int64_t begin;
  int n;
};
template <int N>
FASTOPT_DEVICE ChunkPos chunk_pos(const ChunkGrid<N>& g) {
  ChunkPos c;
  c.t = find_tensor(g.block_start, g.n, int32_t(blockIdx.x));
  c.chunk = int(blockIdx.x) - g.block_start[c.t];
  c.begin = int64_t(c.chunk) * g.chunk_elems;
  c.n = int(min64(g.chunk_elems, g.numel[c.t] - c.begin));
  return c;
}

// 16 bytes of elements: one vector load or store.
template <class T>
struct alignas(16) Unit {
  T v[16 / sizeof(T)];
};

// Elements per vector step of the update: 16 bytes of the narrowest type.
template <class P, class G, class S>
constexpr int vec_elems() {
  return sizeof(P) == 2 || sizeof(G) == 2 || sizeof(S) == 2 ? 8 : 4;
}

// A chunk takes the vector path when every pointer it touches is 16-byte aligned (null
// pointers, of states a tensor does not have, count as aligned). Shared with the host's launch
// records, so tests can check which path each chunk takes.
FASTOPT_HD bool chunk_vectorizable(const void* p, const void* g, const void* s0, const void* s1,
                                   const void* s2, const void* s3) {
  return aligned16(p) && aligned16(g) && aligned16(s0) && aligned16(s1) && aligned16(s2) &&
         aligned16(s3);
}

template <int kVec, class T>
FASTOPT_DEVICE void load_vec(const T* base, int i, float (&out)[kVec]) {
  constexpr int kPer = 16 / sizeof(T);
  const Unit<T>* u = reinterpret_cast<const Unit<T>*>(base) + int64_t(i) * (kVec / kPer);
#pragma unroll
  for (int k = 0; k < kVec / kPer; ++k) {
    const Unit<T> x = u[k];
#pragma unroll
    for (int e = 0; e < kPer; ++e) out[k * kPer + e] = load(&x.v[e]);
  }
}

template <int kVec, class T>
FASTOPT_DEVICE void store_vec(T* base, int i, const float (&in)[kVec]) {
  constexpr int kPer = 16 / sizeof(T);
  Unit<T>* u = reinterpret_cast<Unit<T>*>(base) + int64_t(i) * (kVec / kPer);
#pragma unroll
  for (int k = 0; k < kVec / kPer; ++k) {
    Unit<T> x;
#pragma unroll
    for (int e = 0; e < kPer; ++e) store(&x.v[e], in[k * kPer + e]);
    u[k] = x;
  }
}

// Reduces v over the block with the measure's combine (a fixed tree: warp shuffles, then the
// warps' results in warp 0); the result is valid in thread 0. blockDim.x: a multiple of 32.
FASTOPT_DEVICE double block_reduce(double v, const NormMeasure& m) {
  __shared__ double warp_result[kBlockThreads / kWarp];
  const int lane = int(threadIdx.x) % kWarp, warp = int(threadIdx.x) / kWarp;
  const int warps = int(blockDim.x) / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    v = m.combine(v, __shfl_down_sync(0xffffffffu, v, offset));
  if (lane == 0) warp_result[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? warp_result[lane] : 0.0;
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset >>= 1)
      v = m.combine(v, __shfl_down_sync(0xffffffffu, v, offset));
  }
  __syncthreads();  // warp_result may be reused by the next call
  return v;
}

// ---- update ----------------------------------------------------------------------------------

template <class Op, class F, int... Vs>
FASTOPT_DEVICE void with_variant(std::integer_sequence<int, Vs...>, int variant, F&& f) {
  ((variant == Vs ? f(std::integral_constant<int, Vs>{}) : void()), ...);
}

// One chunk through the functor's variant V; a grad is read as (g * inv_scale) * clip_coef, as
// in the CPU engine.
template <class Op, int V, class P, class G, class S>
FASTOPT_DEVICE void update_chunk(const typename Op::Args& a, P* __restrict__ p,
                                 const G* __restrict__ g, S* __restrict__ s0, S* __restrict__ s1,
                                 S* __restrict__ s2, S* __restrict__ s3, int n, float inv_scale,
                                 float clip_coef) {
  constexpr int kUsed = Op::states_used(V);
  const int tid = int(threadIdx.x), threads = int(blockDim.x);
  int done = 0;  // elements the vector path updated; the scalar path takes the rest
  if (chunk_vectorizable(p, g, s0, s1, s2, s3)) {
    constexpr int kVec = vec_elems<P, G, S>();
    const int vectors = n / kVec;
    for (int i = tid; i < vectors; i += threads) {
      float pv[kVec], gv[kVec], sv[kMaxStates][kVec];
      load_vec<kVec>(p, i, pv);
      load_vec<kVec>(g, i, gv);
      if (kUsed & 1) load_vec<kVec>(s0, i, sv[0]);
      if (kUsed & 2) load_vec<kVec>(s1, i, sv[1]);
      if (kUsed & 4) load_vec<kVec>(s2, i, sv[2]);
      if (kUsed & 8) load_vec<kVec>(s3, i, sv[3]);
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        float s[kMaxStates] = {kUsed & 1 ? sv[0][j] : 0.f, kUsed & 2 ? sv[1][j] : 0.f,
                               kUsed & 4 ? sv[2][j] : 0.f, kUsed & 8 ? sv[3][j] : 0.f};
        Op::template update<V>(a, pv[j], (gv[j] * inv_scale) * clip_coef, s);
#pragma unroll
        for (int k = 0; k < kMaxStates; ++k) sv[k][j] = s[k];
      }
      store_vec<kVec>(p, i, pv);
      if (kUsed & 1) store_vec<kVec>(s0, i, sv[0]);
      if (kUsed & 2) store_vec<kVec>(s1, i, sv[1]);
      if (kUsed & 4) store_vec<kVec>(s2, i, sv[2]);
      if (kUsed & 8) store_vec<kVec>(s3, i, sv[3]);
    }
    done = vectors * kVec;
  }
  for (int base = done; base < n; base += threads * kIlp) {
    float pv[kIlp], gv[kIlp], sv[kIlp][kMaxStates];
#pragma unroll
    for (int j = 0; j < kIlp; ++j) {
      const int i = base + tid + j * threads;
      pv[j] = gv[j] = sv[j][0] = sv[j][1] = sv[j][2] = sv[j][3] = 0.f;
      if (i < n) {
        pv[j] = load(p + i);
        gv[j] = (load(g + i) * inv_scale) * clip_coef;
        load_states<Op, V>(sv[j], s0, s1, s2, s3, i);
      }
    }
#pragma unroll
    for (int j = 0; j < kIlp; ++j) {
      const int i = base + tid + j * threads;
      if (i < n) {
        Op::template update<V>(a, pv[j], gv[j], sv[j]);
        store(p + i, pv[j]);
        if (kUsed & 1) store(s0 + i, sv[j][0]);
        if (kUsed & 2) store(s1 + i, sv[j][1]);
        if (kUsed & 4) store(s2 + i, sv[j][2]);
        if (kUsed & 8) store(s3 + i, sv[j][3]);
      }
    }
  }
}

// This thread's share of the sum of squares of the op's direction over a chunk (scalar loads:
// the pass reads what the update reads, once, in a fixed order per thread).
template <class Op, int V, class P, class G, class S>
FASTOPT_DEVICE double direction_chunk(const typename Op::Args& a, const P* __restrict__ p,
                                      const G* __restrict__ g, const S* __restrict__ s0,
                                      const S* __restrict__ s1, const S* __restrict__ s2,
                                      const S* __restrict__ s3, int n, float inv_scale,
                                      float clip_coef) {
  double acc = 0.0;
  for (int i = int(threadIdx.x); i < n; i += int(blockDim.x)) {
    const double d = direction_element<Op, V>(a, p, g, s0, s1, s2, s3, i, inv_scale, clip_coef);
    acc += d * d;
  }
  return acc;
}

// kStored: the tensors' param store is not nearest (precision.h); a plain loop through it, in
// a kernel of its own so the rounding's registers do not crowd the vectorized path.
template <class Op, class P, class G, class S, int N, bool kStored, int kThreads = kBlockThreads,
          int kMinBlocks = 1>
__global__ void __launch_bounds__(kThreads, kMinBlocks)
    update_kernel(FASTOPT_KERNEL_ARG(UpdateLaunch<N, Op::kStates>) L, const typename Op::Args* args,
                  const PipelineState* pipe) {
  float inv_scale = 1.f, clip_coef = 1.f;
  if (pipe != nullptr) {
    if (pipe->skip) return;
    inv_scale = pipe->inv_scale;
    clip_coef = pipe->clip_coef;
  }
  const ChunkPos c = chunk_pos(L.grid);
  const typename Op::Args a = args[L.slot[c.t]];
  P* p = static_cast<P*>(L.param[c.t]) + c.begin;
  const G* g = static_cast<const G*>(L.grad[c.t]) + c.begin;
  // the chunk of each state buffer; nullptr for a state the optimizer or tensor does not have
  // (the clamped index keeps the dead branch in bounds)
  auto state = [&](int k) -> S* {
    void* base = k < Op::kStates ? L.state[k < Op::kStates ? k : 0][c.t] : nullptr;
    return base != nullptr ? static_cast<S*>(base) + c.begin : nullptr;
  };
  S* const s0 = state(0);
  S* const s1 = state(1);
  S* const s2 = state(2);
  S* const s3 = state(3);
  with_variant<Op>(typename Op::Variants{}, a.variant, [&](auto v) {
    if constexpr (kStored) {
      const ParamSlot& slot = L.store[c.t];
      const ParamStore ps = param_store(slot.mode, slot.aux, int64_t(sizeof(P)), c.begin, slot.seed,
                                        slot.tensor, slot.step);
      with_param_mode(ps.mode, [&](auto mode) {
        for (int i = int(threadIdx.x); i < c.n; i += int(blockDim.x))
          update_element_stored<Op, decltype(v)::value, decltype(mode)::value>(
              a, ps, p, g, s0, s1, s2, s3, i, inv_scale, clip_coef);
      });
    } else {
      update_chunk<Op, decltype(v)::value>(a, p, g, s0, s1, s2, s3, c.n, inv_scale, clip_coef);
    }
  });
}

// ---- 8-bit states ---------------------------------------------------------------------------

// A warp's absmax: the NaN-propagating max over its lanes (exact, so the tree's order gives the
// CPU loop's result), in every lane.
FASTOPT_DEVICE float warp_absmax(float m) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset >>= 1)
    m = quant::fold_absmax(m, __shfl_xor_sync(0xffffffffu, m, offset));
  return m;
}

constexpr int kQuantPerLane = int(kQuantBlock) / kWarp;
// Half the chunk kernels' block: each lane holds kQuantPerLane elements of every state, which
// needs more than the 128 registers a 512-thread block leaves (fp16 Adam spilled on sm_80).
constexpr int kQuantBlockThreads = 256;

// One chunk of a tensor with 8-bit states: each warp takes whole blocks of kQuantBlock elements
// (a chunk begins on a block boundary), kQuantPerLane per lane in registers: dequantize, the
// update in the tensor's param mode, the block's new absmax by a warp reduction, requantize.
template <class Op, class P, class G, int N>
__global__ void __launch_bounds__(kQuantBlockThreads)
    update_q8_kernel(FASTOPT_KERNEL_ARG(QuantUpdateLaunch<N, Op::kStates>) L,
                     const typename Op::Args* args, const PipelineState* pipe) {
  float inv_scale = 1.f, clip_coef = 1.f;
  if (pipe != nullptr) {
    if (pipe->skip) return;
    inv_scale = pipe->inv_scale;
    clip_coef = pipe->clip_coef;
  }
  const ChunkPos c = chunk_pos(L.grid);
  const typename Op::Args a = args[L.slot[c.t]];
  P* p = static_cast<P*>(L.param[c.t]) + c.begin;
  const G* g = static_cast<const G*>(L.grad[c.t]) + c.begin;
  const ParamSlot& slot = L.store[c.t];
  const ParamStore ps = param_store(slot.mode, slot.aux, int64_t(sizeof(P)), c.begin, slot.seed,
                                    slot.tensor, slot.step);
  const int lane = int(threadIdx.x) % kWarp, warp = int(threadIdx.x) / kWarp;
  const int warps = int(blockDim.x) / kWarp;
  const int blocks = int((c.n + kQuantBlock - 1) / kQuantBlock);
  const int64_t first = c.begin / kQuantBlock;
  with_variant<Op>(typename Op::Variants{}, a.variant, [&](auto v) {
    constexpr int V = decltype(v)::value;
    with_param_mode(ps.mode, [&](auto mode) {
      constexpr ParamMode M = decltype(mode)::value;
      // plain unrolled loops over the states (k folds to a constant): a lambda over them would
      // put the arrays in local memory
      constexpr int kUsed = Op::states_used(V);
      for (int q = warp; q < blocks; q += warps) {
        float s[kQuantPerLane][kMaxStates];
        float m[kMaxStates] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
        for (int j = 0; j < kQuantPerLane; ++j) {
          const int i = q * int(kQuantBlock) + j * kWarp + lane;
#pragma unroll
          for (int k = 0; k < kMaxStates; ++k) s[j][k] = 0.f;
          if (i < c.n) {
#pragma unroll
            for (int k = 0; k < Op::kStates; ++k)
              if (kUsed & (1 << k))
                s[j][k] = quant::decode(L.codes[k][c.t][c.begin + i], L.absmax[k][c.t][first + q],
                                        ((Op::kUnsignedStates >> k) & 1u) == 0);
            // through a local array, as update_chunk: a pointer into s[j] kept the whole
            // s in local memory on sm_80
            float t[kMaxStates] = {s[j][0], s[j][1], s[j][2], s[j][3]};
            update_values<Op, V, M>(a, ps, p, g, i, t, inv_scale, clip_coef);
#pragma unroll
            for (int k = 0; k < kMaxStates; ++k) s[j][k] = t[k];
#pragma unroll
            for (int k = 0; k < Op::kStates; ++k)
              if (kUsed & (1 << k)) m[k] = quant::fold_absmax(m[k], s[j][k]);
          }
        }
#pragma unroll
        for (int k = 0; k < Op::kStates; ++k) {
          if (!(kUsed & (1 << k))) continue;
          const bool is_signed = ((Op::kUnsignedStates >> k) & 1u) == 0;
          const float absmax = quant::finish_absmax(warp_absmax(m[k]));
          const float inv = quant::inverse_absmax(absmax);
#pragma unroll
          for (int j = 0; j < kQuantPerLane; ++j) {
            const int i = q * int(kQuantBlock) + j * kWarp + lane;
            if (i < c.n) L.codes[k][c.t][c.begin + i] = quant::encode(s[j][k] * inv, is_signed);
          }
          if (lane == 0) L.absmax[k][c.t][first + q] = absmax;
        }
      }
    });
  });
}

// partials[chunk] = the sum of squares of the op's direction over a chunk of a tensor with
// 8-bit states (kDirectionNorm): the states decoded as update_q8_kernel decodes them, the values
// the update reads (a master copy) as direction_partials_kernel.
template <class Op, class P, class G, int N>
__global__ void __launch_bounds__(kBlockThreads)
    direction_q8_kernel(FASTOPT_KERNEL_ARG(QuantUpdateLaunch<N, Op::kStates>) L,
                        const typename Op::Args* args, const PipelineState* pipe,
                        double* partials) {
  float inv_scale = 1.f, clip_coef = 1.f;
  if (pipe != nullptr) {
    if (pipe->skip) return;
    inv_scale = pipe->inv_scale;
    clip_coef = pipe->clip_coef;
  }
  const ChunkPos c = chunk_pos(L.grid);
  const typename Op::Args a = args[L.slot[c.t]];
  const ParamSlot& slot = L.store[c.t];
  const P* p = static_cast<const P*>(L.param[c.t]) + c.begin;
  const float* master =
      slot.mode == ParamMode::master ? static_cast<const float*>(slot.aux) + c.begin : nullptr;
  const G* g = static_cast<const G*>(L.grad[c.t]) + c.begin;
  const int64_t first = c.begin / kQuantBlock;
  double acc = 0.0;
  with_variant<Op>(typename Op::Variants{}, a.variant, [&](auto v) {
    constexpr int V = decltype(v)::value;
    constexpr int kUsed = Op::states_used(V);
    for (int i = int(threadIdx.x); i < c.n; i += int(blockDim.x)) {
      float s[kMaxStates] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int k = 0; k < Op::kStates; ++k)
        if (kUsed & (1 << k))
          s[k] = quant::decode(L.codes[k][c.t][c.begin + i],
                               L.absmax[k][c.t][first + i / int(kQuantBlock)],
                               ((Op::kUnsignedStates >> k) & 1u) == 0);
      const float pv = master != nullptr ? master[i] : load(p + i);
      const float gv = (load(g + i) * inv_scale) * clip_coef;
      const double d = Op::template direction<V>(a, pv, gv, s);
      acc += d * d;
    }
  });
  acc = block_reduce(acc, NormMeasure{NormType::l2, 2.0});
  if (threadIdx.x == 0) partials[int64_t(L.grid.chunk_base[c.t]) + c.chunk] = acc;
}

// partials[chunk] = the sum of squares of the op's direction over the chunk (kDirectionNorm).
template <class Op, class P, class G, class S, int N>
__global__ void __launch_bounds__(kBlockThreads)
    direction_partials_kernel(FASTOPT_KERNEL_ARG(UpdateLaunch<N, Op::kStates>) L,
                              const typename Op::Args* args, const PipelineState* pipe,
                              double* partials) {
  float inv_scale = 1.f, clip_coef = 1.f;
  if (pipe != nullptr) {
    if (pipe->skip) return;
    inv_scale = pipe->inv_scale;
    clip_coef = pipe->clip_coef;
  }
  const ChunkPos c = chunk_pos(L.grid);
  const typename Op::Args a = args[L.slot[c.t]];
  const P* p = static_cast<const P*>(L.param[c.t]) + c.begin;
  const G* g = static_cast<const G*>(L.grad[c.t]) + c.begin;
  auto state = [&](int k) -> const S* {
    const void* base = k < Op::kStates ? L.state[k < Op::kStates ? k : 0][c.t] : nullptr;
    return base != nullptr ? static_cast<const S*>(base) + c.begin : nullptr;
  };
  double acc = 0.0;
  with_variant<Op>(typename Op::Variants{}, a.variant, [&](auto v) {
    acc = direction_chunk<Op, decltype(v)::value>(a, p, g, state(0), state(1), state(2), state(3),
                                                  c.n, inv_scale, clip_coef);
  });
  acc = block_reduce(acc, NormMeasure{NormType::l2, 2.0});
  if (threadIdx.x == 0) partials[int64_t(L.grid.chunk_base[c.t]) + c.chunk] = acc;
}

// ---- norms -----------------------------------------------------------------------------------

// This thread's share of a chunk, folded in a fixed order.
template <NormType kType, class T>
FASTOPT_DEVICE double fold_chunk(const T* __restrict__ x, int n, float scale, double p) {
  const NormMeasure m{kType, p};
  const int tid = int(threadIdx.x), threads = int(blockDim.x);
  double acc = 0.0;
  int i = tid;
  if (aligned16(x)) {
    constexpr int kPer = 16 / sizeof(T);
    const int vectors = n / kPer;
    for (int v = tid; v < vectors; v += threads) {
      float xs[kPer];
      load_vec<kPer>(x, v, xs);
#pragma unroll
      for (int e = 0; e < kPer; ++e) acc = m.combine(acc, m.fold(double(xs[e] * scale)));
    }
    i = vectors * kPer + tid;
  }
#pragma unroll 4
  for (; i < n; i += threads) acc = m.combine(acc, m.fold(double(load(x + i) * scale)));
  return acc;
}

// partials[chunk] = the folded measure of the chunk's values * scale.
template <class T, int N>
__global__ void __launch_bounds__(kBlockThreads)
    norm_partials_kernel(FASTOPT_KERNEL_ARG(NormLaunch<N>) L) {
  const ChunkPos c = chunk_pos(L.grid);
  const float scale = L.scale.resolve();
  const T* x = static_cast<const T*>(L.x[c.t]) + c.begin;
  double acc = 0.0;
  switch (L.measure.type) {
    case NormType::l2: acc = fold_chunk<NormType::l2>(x, c.n, scale, 2.0); break;
    case NormType::l1: acc = fold_chunk<NormType::l1>(x, c.n, scale, 1.0); break;
    case NormType::inf: acc = fold_chunk<NormType::inf>(x, c.n, scale, 0.0); break;
    case NormType::p: acc = fold_chunk<NormType::p>(x, c.n, scale, L.measure.p); break;
  }
  acc = block_reduce(acc, L.measure);
  if (threadIdx.x == 0) L.partials[int64_t(L.grid.chunk_base[c.t]) + c.chunk] = acc;
}

// Combines a tensor's chunk partials (one block per tensor).
template <int N>
__global__ void __launch_bounds__(kTensorThreads)
    combine_kernel(FASTOPT_KERNEL_ARG(CombineLaunch<N>) L, const double* partials, NormMeasure m,
                   double* out) {
  const int t = int(blockIdx.x);
  double acc = 0.0;
  for (int i = int(threadIdx.x); i < L.chunks[t]; i += int(blockDim.x))
    acc = m.combine(acc, partials[int64_t(L.chunk_base[t]) + i]);
  acc = block_reduce(acc, m);
  if (threadIdx.x == 0) out[L.out[t]] = acc;
}

// ---- gradient pipeline and per-tensor preparation --------------------------------------------

// Per tensor (one thread each): counts the step and stores the op's prepared arguments.
template <class Op, int N>
__global__ void __launch_bounds__(kPrepareThreads)
    prepare_kernel(FASTOPT_KERNEL_ARG(PrepareLaunch<N, Op::kNumHyper>) L, typename Op::Args* args,
                   int32_t* fresh, const PipelineState* pipe, int32_t commit) {
  if (pipe != nullptr && pipe->skip) return;
  const int t = int(blockIdx.x * blockDim.x + threadIdx.x);
  if (t >= L.n) return;
  const int row = L.row[t];
  double h[Op::kNumHyper];
#pragma unroll
  for (int k = 0; k < Op::kNumHyper; ++k) h[k] = L.hyper[row][k];
  if (L.lr[row] != nullptr) h[Op::kLr] = double(*L.lr[row]);
  const int slot = L.slot[t];
  // commit 0 (the tensor_out phase, which updates nothing): step counts and first-step flags
  // stay for the call that updates
  double step = 0.0;
  if constexpr (Op::kHasStep) step = double(commit ? (*L.step[t] += 1.f) : *L.step[t] + 1.f);
  args[slot] = Op::prepare(h, step, fresh[slot]);
  if (commit) fresh[slot] = 0;
}

// Per tensor (one block each): its reductions from the chunk partials (partials[k] holds those
// of Reduction 1 << k) or from every process's sums (sums_in), then Op::adapt on its prepared
// arguments; or (sums_out, the reduction phase of sharded tensors) only its sums, reported.
template <class Op, int N>
__global__ void __launch_bounds__(kTensorThreads)
    adapt_kernel(FASTOPT_KERNEL_ARG(CombineLaunch<N>) L, typename Op::Args* args,
                 const double* partials, int64_t partials_stride, const PipelineState* pipe,
                 double* sums_out, const double* sums_in) {
  if (pipe != nullptr && pipe->skip) return;
  const int t = int(blockIdx.x);
  const NormMeasure l2{NormType::l2, 2.0};
  const int64_t at = int64_t(L.tensor_id[t]) * kNumReductions;
  double sums[kNumReductions];
#pragma unroll
  for (int k = 0; k < kNumReductions; ++k) {
    double acc = 0.0;
    if (sums_in != nullptr) {
      acc = sums_in[at + k];
    } else if (Op::kReductions & (1u << k)) {
      const double* part = partials + k * partials_stride + L.chunk_base[t];
      for (int i = int(threadIdx.x); i < L.chunks[t]; i += int(blockDim.x)) acc += part[i];
      acc = block_reduce(acc, l2);
    }
    sums[k] = acc;
  }
  if (threadIdx.x != 0) return;
  if (sums_out != nullptr) {
#pragma unroll
    for (int k = 0; k < kNumReductions; ++k) sums_out[at + k] = sums[k];
    return;
  }
  TensorNorms norms;
  norms.param = sqrt(sums[0]);
  norms.grad = sqrt(sums[1]);
  norms.direction = sqrt(sums[2]);
  if constexpr (Op::kReductions != 0) Op::adapt(args[L.out[t]], norms);
}

}  // namespace cuda
}  // namespace fastopt
