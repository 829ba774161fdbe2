// The CPU multi-tensor engine, compiled once per instruction set (see engine_*.cpp).
//
// Every entry of the table is cut into fixed-size chunks (independent of the thread count);
// OpenMP runs the chunks of all tensors of all groups in one parallel region, and the inner loops
// are plain element loops over the shared functors that the compiler vectorizes.
#pragma once

#include <omp.h>

#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/element.h"
#include "../core/norms.h"
#include "../core/ops.h"
#include "../core/quant8.h"
#include "../core/table.h"
#include "api.h"
#include "convert.h"
#include "quantize.h"

namespace fastopt {
namespace FASTOPT_CPU_NS {

// Below this many elements one thread is faster than waking the pool.
constexpr int64_t kSerialElems = 1 << 15;

template <class F>
void for_chunks(const StepCall& c, F&& body) {
  const int64_t n = c.n_chunks;
  const int threads = c.total_elems < kSerialElems ? 1 : c.num_threads;
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) body(c.chunks[i]);
    return;
  }
#pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int64_t i = 0; i < n; ++i) body(c.chunks[i]);
}

// Calls f(P*, G*, S*) with the entry's element types; only the supported combinations exist.
template <class F>
void dispatch_types(const TensorEntry& e, F&& f) {
  auto with_param = [&](auto* p) {
    using P = std::remove_pointer_t<decltype(p)>;
    auto with_grad = [&](auto* g) {
      auto* pp = static_cast<P*>(e.param);
      auto* gg = static_cast<const std::remove_pointer_t<decltype(g)>*>(e.grad);
      if (e.state_dtype == DType::f32)
        f(pp, gg, static_cast<float*>(nullptr));
      else
        f(pp, gg, static_cast<P*>(nullptr));
    };
    if (e.grad_dtype == DType::f32)
      with_grad(static_cast<float*>(nullptr));
    else
      with_grad(static_cast<P*>(nullptr));
  };
  switch (e.param_dtype) {
    case DType::f32: with_param(static_cast<float*>(nullptr)); break;
    case DType::f16: with_param(static_cast<half_t*>(nullptr)); break;
    case DType::bf16: with_param(static_cast<bfloat16_t*>(nullptr)); break;
    case DType::q8: break;  // never a param's type
  }
}

// The view of n elements at src the update loop reads: a float32 copy in buf for types the ISA
// converts with an instruction (kConverted, convert.h), else src itself.
template <class T>
auto stage_in(T* src, float* buf, int n) {
  if constexpr (kConverted<std::remove_const_t<T>>) {
    to_float(src, buf, n);
    return static_cast<std::conditional_t<std::is_const_v<T>, const float*, float*>>(buf);
  } else {
    return src;
  }
}

template <class T, class B>
void stage_out(T* dst, const B* buf, int n) {
  if constexpr (kConverted<T>) from_float(buf, dst, n);
}

// One block of kBlock elements from element b: the update loop on the param values pf
// (updated in place), with the grads and the states the variant uses staged in and out.
template <class Op, int V, class PF, class G, class S>
__attribute__((always_inline)) inline void update_block(const typename Op::Args& a,
                                                        PF* __restrict pf, const G* __restrict g,
                                                        S* s0, S* s1, S* s2, S* s3, int64_t b,
                                                        float inv_scale, float clip_coef) {
  constexpr int kUsed = Op::states_used(V);
  float gbuf[kBlock], sbuf[kMaxStates][kBlock];
  auto* __restrict gf = stage_in(g + b, gbuf, kBlock);
  // unused states stay null (update_element does not touch them)
  auto state = [&](S* sk, int k) { return kUsed & (1 << k) ? sk + b : nullptr; };
  auto* __restrict f0 = stage_in(state(s0, 0), sbuf[0], kUsed & 1 ? kBlock : 0);
  auto* __restrict f1 = stage_in(state(s1, 1), sbuf[1], kUsed & 2 ? kBlock : 0);
  auto* __restrict f2 = stage_in(state(s2, 2), sbuf[2], kUsed & 4 ? kBlock : 0);
  auto* __restrict f3 = stage_in(state(s3, 3), sbuf[3], kUsed & 8 ? kBlock : 0);
  for (int i = 0; i < kBlock; ++i)
    update_element<Op, V>(a, pf, gf, f0, f1, f2, f3, i, inv_scale, clip_coef);
  if (kUsed & 1) stage_out(s0 + b, f0, kBlock);
  if (kUsed & 2) stage_out(s1 + b, f1, kBlock);
  if (kUsed & 4) stage_out(s2 + b, f2, kBlock);
  if (kUsed & 8) stage_out(s3 + b, f3, kBlock);
}

// V: the functor's compile-time variant; the states it uses are loaded and stored, others not.
// No per-element branch remains, so the loop vectorizes. 16-bit elements go through float
// blocks (convert.h), so the conversions use the ISA's instructions and the update loop is
// pure float32.
template <class Op, int V, class P, class G, class S>
void update_span(const typename Op::Args& args, P* __restrict p, const G* __restrict g,
                 S* __restrict s0, S* __restrict s1, S* __restrict s2, S* __restrict s3, int64_t n,
                 float inv_scale, float clip_coef) {
  const typename Op::Args a = args;  // a local copy cannot alias the stores below
  if constexpr (!kConverted<P> && !kConverted<G> && !kConverted<S>) {
    for (int64_t i = 0; i < n; ++i)
      update_element<Op, V>(a, p, g, s0, s1, s2, s3, i, inv_scale, clip_coef);
  } else {
    // one vector per block, of fixed length: the buffers fold into registers
    int64_t b = 0;
    for (; b + kBlock <= n; b += kBlock) {
      float pbuf[kBlock];
      auto* __restrict pf = stage_in(p + b, pbuf, kBlock);
      update_block<Op, V>(a, pf, g, s0, s1, s2, s3, b, inv_scale, clip_coef);
      stage_out(p + b, pf, kBlock);
    }
    for (; b < n; ++b)  // the scalar conversions: the same bits
      update_element<Op, V>(a, p, g, s0, s1, s2, s3, b, inv_scale, clip_coef);
  }
}

// The rounding bits (rounding_bits in precision.h) of the kSpanBits elements from element `at`
// of the tensor, a multiple of 8: 16 Philox calls side by side, in one pass over their rounds
// (a quarter less time per step than one call per 8 elements, measured).
constexpr int kSpanBits = 16 * kRoundingGroup;

inline void span_rounding_bits(const ParamStore& ps, int64_t at, uint16_t* out) {
  constexpr int kCalls = kSpanBits / kRoundingGroup;
  uint32_t c0[kCalls], c1[kCalls], c2[kCalls], c3[kCalls];
  const uint64_t first = uint64_t(at / kRoundingGroup);
  for (int l = 0; l < kCalls; ++l) {
    c0[l] = uint32_t(first + l);
    c1[l] = uint32_t((first + l) >> 32);
    c2[l] = ps.step;
    c3[l] = 0u;
  }
  uint32_t k0 = ps.seed, k1 = ps.tensor;
  for (int r = 0; r < 10; ++r) {  // philox4x32_10's rounds, lane by lane
    if (r > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    for (int l = 0; l < kCalls; ++l) {
      const uint64_t m0 = uint64_t(0xD2511F53u) * c0[l];
      const uint64_t m1 = uint64_t(0xCD9E8D57u) * c2[l];
      c0[l] = uint32_t(m1 >> 32) ^ c1[l] ^ k0;
      c2[l] = uint32_t(m0 >> 32) ^ c3[l] ^ k1;
      c1[l] = uint32_t(m1);
      c3[l] = uint32_t(m0);
    }
  }
  for (int l = 0; l < kCalls; ++l) {
    const uint32_t words[4] = {c0[l], c1[l], c2[l], c3[l]};
    for (int e = 0; e < kRoundingGroup; ++e)
      out[l * kRoundingGroup + e] = uint16_t(words[e >> 1] >> ((e & 1) * 16));
  }
}

// update_span through a param store other than nearest (16-bit params): the update loop runs
// on float blocks of the param's value (its master copy in place, or the converted param), and
// the block is then written as the mode says. Every element gets the bits of
// update_element_stored, which the tail and the CUDA kernels use.
template <class Op, int V, class P, class G, class S>
void update_span_stored(const typename Op::Args& args, const ParamStore& ps, P* __restrict p,
                        const G* __restrict g, S* __restrict s0, S* __restrict s1, S* __restrict s2,
                        S* __restrict s3, int64_t n, float inv_scale, float clip_coef) {
  const typename Op::Args a = args;
  float* const master = ps.mode == ParamMode::master ? static_cast<float*>(ps.aux) : nullptr;
  P* const comp = ps.mode == ParamMode::kahan ? static_cast<P*>(ps.aux) : nullptr;
  uint16_t bits[kSpanBits];  // stochastic: the rounding bits of elements span..span+kSpanBits
  int64_t span = -kSpanBits;
  int64_t b = 0;
  for (; b + kBlock <= n; b += kBlock) {
    float pbuf[kBlock], p0[kBlock];
    float* __restrict pf = pbuf;
    if (master != nullptr)
      pf = master + b;  // updated in place
    else
      to_float(p + b, pbuf, kBlock);
    for (int i = 0; i < kBlock; ++i) p0[i] = pf[i];  // what the kahan store adds to
    update_block<Op, V>(a, pf, g, s0, s1, s2, s3, b, inv_scale, clip_coef);
    switch (ps.mode) {
      case ParamMode::master: from_float(pf, p + b, kBlock); break;
      case ParamMode::kahan:
        for (int i = 0; i < kBlock; ++i) store_compensated(p + b, comp + b, i, p0[i], pf[i]);
        break;
      default:
        if constexpr (std::is_same_v<P, bfloat16_t>) {
          const int64_t at = ps.base + b;
          if (b >= span + kSpanBits && at % kSpanBits == 0 && b + kSpanBits <= n) {
            span_rounding_bits(ps, at, bits);
            span = b;
          }
          if (b + kBlock <= span + kSpanBits) {
            for (int i = 0; i < kBlock; ++i)
              p[b + i].bits = float_to_bfloat16_stochastic(pf[i], bits[b - span + i]);
            break;
          }
          if (at % kRoundingGroup == 0) {  // one Philox call per 8 elements
            for (int i = 0; i < kBlock; i += kRoundingGroup) {
              const Philox4 r = rounding_block(ps, (at + i) / kRoundingGroup);
              for (int l = 0; l < kRoundingGroup; ++l)
                p[b + i + l].bits = float_to_bfloat16_stochastic(pf[i + l], rounding_bits(r, l));
            }
            break;
          }
        }
        for (int i = 0; i < kBlock; ++i)
          store_param<ParamMode::stochastic>(ps, p + b, i, p0[i], pf[i]);
    }
  }
  ParamStore tail = ps;
  tail.base = ps.base + b;
  if (ps.aux != nullptr)
    tail.aux = master != nullptr ? static_cast<void*>(master + b) : static_cast<void*>(comp + b);
  with_param_mode(ps.mode, [&](auto mode) {
    for (int64_t i = 0; b + i < n; ++i)
      update_element_stored<Op, V, decltype(mode)::value>(
          a, tail, p + b, g + b, s0 ? s0 + b : nullptr, s1 ? s1 + b : nullptr,
          s2 ? s2 + b : nullptr, s3 ? s3 + b : nullptr, i, inv_scale, clip_coef);
  });
}

// A chunk of an entry with 8-bit states (quant8.h), block by block: the block's states
// dequantized into float buffers, the float32 update loop of update_span / update_span_stored
// on them (so the param store, staging and vectorization are those of float32 states), then
// requantized with the block's new absmax. A chunk begins on a block boundary (CpuEngine).
template <class Op, int V, class P, class G>
void update_chunk_q8(const typename Op::Args& a, const TensorEntry& e, const Chunk& ch,
                     const ParamStore& chunk_store, float inv_scale, float clip_coef) {
  P* const p = static_cast<P*>(e.param) + ch.begin;
  const G* const g = static_cast<const G*>(e.grad) + ch.begin;
  uint8_t* codes[kMaxStates];
  float* absmax[kMaxStates];
  for (int k = 0; k < kMaxStates; ++k) {
    codes[k] = e.state[k] ? static_cast<uint8_t*>(e.state[k]) + ch.begin : nullptr;
    absmax[k] = e.absmax[k] ? e.absmax[k] + ch.begin / kQuantBlock : nullptr;
  }
  alignas(64) float buf[kMaxStates][kQuantBlock];
  for (int64_t b = 0; b < ch.size; b += kQuantBlock) {
    const int n = int(ch.size - b < kQuantBlock ? ch.size - b : kQuantBlock);
    const int64_t q = b / kQuantBlock;
    for_used_states<Op, V>([&](auto k) {
      constexpr int K = decltype(k)::value;
      dequantize_block<state_signed<Op, K>()>(codes[K] + b, n, absmax[K][q], buf[K]);
    });
    if constexpr (!std::is_same_v<P, float>) {
      if (chunk_store.mode != ParamMode::nearest) {
        ParamStore ps = chunk_store;
        ps.base = chunk_store.base + b;
        if (ps.aux != nullptr)
          ps.aux = static_cast<char*>(ps.aux) +
                   b * (ps.mode == ParamMode::master ? 4 : int64_t(sizeof(P)));
        update_span_stored<Op, V>(a, ps, p + b, g + b, buf[0], buf[1], buf[2], buf[3], n, inv_scale,
                                  clip_coef);
      } else {
        update_span<Op, V>(a, p + b, g + b, buf[0], buf[1], buf[2], buf[3], n, inv_scale,
                           clip_coef);
      }
    } else {
      update_span<Op, V>(a, p + b, g + b, buf[0], buf[1], buf[2], buf[3], n, inv_scale, clip_coef);
    }
    for_used_states<Op, V>([&](auto k) {
      constexpr int K = decltype(k)::value;
      quantize_block<state_signed<Op, K>()>(buf[K], n, codes[K] + b, absmax[K] + q);
    });
  }
}

// f(P*, G*) with an entry's param and grad types (entries with 8-bit states).
template <class F>
void dispatch_param_grad(const TensorEntry& e, F&& f) {
  auto with_param = [&](auto* p) {
    using P = std::remove_pointer_t<decltype(p)>;
    if (e.grad_dtype == DType::f32)
      f(p, static_cast<const float*>(nullptr));
    else
      f(p, static_cast<const P*>(nullptr));
  };
  switch (e.param_dtype) {
    case DType::f32: with_param(static_cast<float*>(nullptr)); break;
    case DType::f16: with_param(static_cast<half_t*>(nullptr)); break;
    case DType::bf16: with_param(static_cast<bfloat16_t*>(nullptr)); break;
    case DType::q8: break;
  }
}

// Sums of squares over a span of the op's direction and, for ops that also reduce the param
// (kWithParam: LAMB), of the param, read once for both; kLanes fixed accumulators, as in
// reduce_span below (the param sum has reduce_span's bits: the same lanes, the same order).
struct DirectionSums {
  double direction = 0.0, param = 0.0;
};

// The accumulators of one chunk. A chunk may be added span by span (the blocks of 8-bit
// states, multiples of kLanes): the lanes run on, so the sums are those of one span.
template <bool kWithParam>
struct DirectionLanes {
  static constexpr int kLanes = 16;
  double acc[kLanes] = {}, pacc[kLanes] = {};
};

// The whole kLanes groups of a span into the lanes; returns the elements it took.
template <class Op, int V, bool kWithParam, class P, class G, class S>
int64_t add_direction_lanes(DirectionLanes<kWithParam>& lanes, const typename Op::Args& args,
                            const P* __restrict p, const G* __restrict g, const S* __restrict s0,
                            const S* __restrict s1, const S* __restrict s2, const S* __restrict s3,
                            int64_t n, float inv_scale, float clip_coef) {
  constexpr int kLanes = DirectionLanes<kWithParam>::kLanes;
  const typename Op::Args a = args;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    // the directions in float (one vector), then the double accumulators: two simple loops
    // the compiler vectorizes, where one fused loop mixes widths and does not
    float d[kLanes];
    for (int l = 0; l < kLanes; ++l)
      d[l] = direction_element<Op, V>(a, p, g, s0, s1, s2, s3, i + l, inv_scale, clip_coef);
    for (int l = 0; l < kLanes; ++l) lanes.acc[l] += double(d[l]) * double(d[l]);
    if constexpr (kWithParam)
      for (int l = 0; l < kLanes; ++l) {
        const double w = double(load(p + i + l));
        lanes.pacc[l] += w * w;
      }
  }
  return i;
}

// The lanes' sums, then elements [from, n) of the chunk's last span one by one.
template <class Op, int V, bool kWithParam, class P, class G, class S>
DirectionSums finish_direction(const DirectionLanes<kWithParam>& lanes, const typename Op::Args& a,
                               const P* p, const G* g, const S* s0, const S* s1, const S* s2,
                               const S* s3, int64_t from, int64_t n, float inv_scale,
                               float clip_coef) {
  DirectionSums sums;
  for (int l = 0; l < DirectionLanes<kWithParam>::kLanes; ++l) {
    sums.direction += lanes.acc[l];
    sums.param += lanes.pacc[l];
  }
  for (int64_t i = from; i < n; ++i) {
    const double d = direction_element<Op, V>(a, p, g, s0, s1, s2, s3, i, inv_scale, clip_coef);
    sums.direction += d * d;
    if constexpr (kWithParam) {
      const double w = double(load(p + i));
      sums.param += w * w;
    }
  }
  return sums;
}

template <class Op, int V, bool kWithParam, class P, class G, class S>
DirectionSums direction_span(const typename Op::Args& a, const P* p, const G* g, const S* s0,
                             const S* s1, const S* s2, const S* s3, int64_t n, float inv_scale,
                             float clip_coef) {
  DirectionLanes<kWithParam> lanes;
  const int64_t i = add_direction_lanes<Op, V, kWithParam>(lanes, a, p, g, s0, s1, s2, s3, n,
                                                           inv_scale, clip_coef);
  return finish_direction<Op, V, kWithParam>(lanes, a, p, g, s0, s1, s2, s3, i, n, inv_scale,
                                             clip_coef);
}

// direction_span over a chunk of an entry with 8-bit states: block by block, the states
// dequantized as the update will (update_chunk_q8), the lanes running on. p: the values the
// update reads (a master copy: float32).
template <class Op, int V, bool kWithParam, class P, class G>
DirectionSums direction_chunk_q8(const typename Op::Args& a, const TensorEntry& e, const Chunk& ch,
                                 const P* values, float inv_scale, float clip_coef) {
  const P* const p = values + ch.begin;
  const G* const g = static_cast<const G*>(e.grad) + ch.begin;
  alignas(64) float buf[kMaxStates][kQuantBlock];
  DirectionLanes<kWithParam> lanes;
  for (int64_t b = 0; b < ch.size; b += kQuantBlock) {
    const int n = int(ch.size - b < kQuantBlock ? ch.size - b : kQuantBlock);
    for_used_states<Op, V>([&](auto k) {
      constexpr int K = decltype(k)::value;
      dequantize_block<state_signed<Op, K>()>(
          static_cast<const uint8_t*>(e.state[K]) + ch.begin + b, n,
          e.absmax[K][(ch.begin + b) / kQuantBlock], buf[K]);
    });
    const int64_t took = add_direction_lanes<Op, V, kWithParam>(
        lanes, a, p + b, g + b, buf[0], buf[1], buf[2], buf[3], n, inv_scale, clip_coef);
    if (b + n == ch.size)
      return finish_direction<Op, V, kWithParam>(lanes, a, p + b, g + b, buf[0], buf[1], buf[2],
                                                 buf[3], took, n, inv_scale, clip_coef);
  }
  return DirectionSums{};
}

// f(std::integral_constant<int, V>) for the variant V of the op's Variants equal to `variant`.
template <class F, int... Vs>
void with_variant(std::integer_sequence<int, Vs...>, int variant, F&& f) {
  ((variant == Vs ? f(std::integral_constant<int, Vs>{}) : void()), ...);
}

// Fold of a span into kLanes independent accumulators: vectorizes without reassociating, and
// the lane layout is fixed in the source, so every instruction set gives the same bits.
template <class T>
double reduce_span(const T* __restrict x, int64_t n, float scale, NormMeasure m) {
  constexpr int kLanes = 16;
  double acc[kLanes] = {};
  int64_t i = 0;
  switch (m.type) {
    case NormType::l2:
      for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const double v = double(load(x + i + l) * scale);
          acc[l] += v * v;
        }
      break;
    case NormType::l1:
      for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += fabs(double(load(x + i + l) * scale));
      break;
    case NormType::inf:
      for (; i + kLanes <= n; i += kLanes)
        for (int l = 0; l < kLanes; ++l) {
          const double v = fabs(double(load(x + i + l) * scale));
          acc[l] = ((v > acc[l]) | (v != v)) ? v : acc[l];
        }
      break;
    case NormType::p: break;  // pow per element: the scalar loop below
  }
  double total = 0.0;
  for (int l = 0; l < kLanes; ++l) total = m.combine(total, acc[l]);
  for (; i < n; ++i) total = m.combine(total, m.fold(double(load(x + i) * scale)));
  return total;
}

// Per-chunk partials of a norm measure over params (which == 0) or grads (which == 1).
inline void chunk_partials(const StepCall& c, int which, float scale, NormMeasure m,
                           double* partial) {
  for_chunks(c, [&](const Chunk& ch) {
    const TensorEntry& e = c.entries[ch.entry];
    const int64_t idx = &ch - c.chunks;
    if (!e.active) {
      partial[idx] = 0.0;
      return;
    }
    const void* base = which == 0 ? param_values(e) : e.grad;
    const DType dt = which == 0 ? param_values_dtype(e) : e.grad_dtype;
    switch (dt) {
      case DType::f32:
        partial[idx] = reduce_span(static_cast<const float*>(base) + ch.begin, ch.size, scale, m);
        break;
      case DType::f16:
        partial[idx] = reduce_span(static_cast<const half_t*>(base) + ch.begin, ch.size, scale, m);
        break;
      case DType::bf16:
        partial[idx] =
            reduce_span(static_cast<const bfloat16_t*>(base) + ch.begin, ch.size, scale, m);
        break;
      case DType::q8: break;  // never a param's or a grad's type
    }
  });
}

// Folded (unfinished) per-tensor measures: chunks of an entry are contiguous in the chunk list.
inline void per_tensor(const StepCall& c, const double* partial, NormMeasure m, double* out) {
  for (int64_t t = 0; t < c.n_entries; ++t) out[t] = 0.0;
  for (int64_t i = 0; i < c.n_chunks; ++i) {
    double& acc = out[c.chunks[i].entry];
    acc = m.combine(acc, partial[i]);
  }
}

inline void tensor_norms(const StepCall& c, int which, float scale, NormMeasure m, double* out) {
  std::vector<double> partial(c.n_chunks);
  chunk_partials(c, which, scale, m, partial.data());
  per_tensor(c, partial.data(), m, out);
}

// f(V, p, g, s0..s3) at chunk ch of its entry, with the entry's element types and variant.
// kValues: p points at the values the update reads (a master copy: float32), for the
// reduction pass; else at the param the update writes.
template <class Op, bool kValues = false, class F>
void with_chunk(const TensorEntry& e, const Chunk& ch, int variant, F&& f) {
  dispatch_types(e, [&](auto* p, const auto* g, auto* s) {
    using S = std::remove_pointer_t<decltype(s)>;
    auto st = [&](int k) { return static_cast<S*>(e.state[k]) + (e.state[k] ? ch.begin : 0); };
    auto call = [&](auto* values) {
      with_variant(typename Op::Variants{}, variant, [&](auto v) {
        f(v, values + ch.begin, g + ch.begin, st(0), st(1), st(2), st(3));
      });
    };
    if (kValues && e.param_mode == ParamMode::master)
      call(static_cast<float*>(e.aux));
    else
      call(p);
  });
}

template <class Op>
void step(const StepCall& c) {
  using Args = typename Op::Args;
  if (Op::kReductions == 0 && c.tensor_out != nullptr) return;  // no reductions to report
  std::vector<Args> args(c.n_entries);
  // prepare() is a function of (group hyperparameters, step, fresh) alone: the next tensor of
  // the same group at the same count gets a copy (AdamW's two pow() calls are most of the cost
  // of updating a tiny tensor)
  int64_t prev = -1;
  double prev_step = 0.0;
  for (int64_t t = 0; t < c.n_entries; ++t) {
    TensorEntry& e = c.entries[t];
    if (!e.active) continue;
    double step = 0.0;  // counted by the call that updates (not the tensor_out phase)
    if (Op::kHasStep) step = double(c.tensor_out != nullptr ? *e.step + 1.f : (*e.step += 1.f));
    const TensorEntry* p = prev >= 0 ? &c.entries[prev] : nullptr;
    if (p != nullptr && p->group == e.group && p->fresh == e.fresh && prev_step == step)
      args[t] = args[prev];
    else
      args[t] = Op::prepare(c.hyper + int64_t(e.group) * c.hyper_stride, step, e.fresh);
    prev = t;
    prev_step = step;
  }
  const float inv_scale = c.scalars.inv_scale, clip_coef = c.scalars.clip_coef;
  if constexpr (Op::kReductions != 0) {  // the reduction pass, then adapt()
    const NormMeasure l2{NormType::l2, 2.0};
    std::vector<double> sums(c.n_entries), partial(c.n_chunks);
    std::vector<TensorNorms> norms(c.n_entries);
    auto sums_at = [&](int64_t t, int k) -> double {
      return c.tensor_in[int64_t(c.entries[t].tensor_id) * kNumReductions + k];
    };
    // Reduction k's sums of squares: reported (tensor_out) and/or turned into norms
    auto into = [&](double TensorNorms::* field, int k) {
      per_tensor(c, partial.data(), l2, sums.data());
      for (int64_t t = 0; t < c.n_entries; ++t) {
        if (c.tensor_out != nullptr && c.entries[t].active)
          c.tensor_out[int64_t(c.entries[t].tensor_id) * kNumReductions + k] = sums[t];
        norms[t].*field = sqrt(sums[t]);
      }
    };
    constexpr bool kDirection = (Op::kReductions & kDirectionNorm) != 0;
    // an op with a direction norm gets its param norm from the same pass (one read of p)
    constexpr bool kParamInDirection = kDirection && (Op::kReductions & kParamNorm) != 0;
    if (c.tensor_in != nullptr) {  // every process's sums
      for (int64_t t = 0; t < c.n_entries; ++t)
        if (c.entries[t].active)
          norms[t] = TensorNorms{sqrt(sums_at(t, 0)), sqrt(sums_at(t, 1)), sqrt(sums_at(t, 2))};
    } else {
      if (!kParamInDirection && (Op::kReductions & kParamNorm)) {
        chunk_partials(c, 0, 1.f, l2, partial.data());
        into(&TensorNorms::param, 0);
      }
      if (Op::kReductions & kGradNorm) {
        chunk_partials(c, 1, inv_scale * clip_coef, l2, partial.data());
        into(&TensorNorms::grad, 1);
      }
      if constexpr (kDirection) {
        std::vector<double> param_partial(kParamInDirection ? c.n_chunks : 0);
        for_chunks(c, [&](const Chunk& ch) {
          const TensorEntry& e = c.entries[ch.entry];
          const int64_t idx = &ch - c.chunks;
          partial[idx] = 0.0;
          if (kParamInDirection) param_partial[idx] = 0.0;
          if (!e.active) return;
          const Args& a = args[ch.entry];
          if (e.state_dtype == DType::q8) {
            dispatch_param_grad(e, [&](auto* param, const auto* g) {
              using G = std::remove_const_t<std::remove_pointer_t<decltype(g)>>;
              auto run = [&](const auto* values) {
                using P = std::remove_const_t<std::remove_pointer_t<decltype(values)>>;
                with_variant(typename Op::Variants{}, a.variant, [&](auto v) {
                  const DirectionSums sums =
                      direction_chunk_q8<Op, decltype(v)::value, kParamInDirection, P, G>(
                          a, e, ch, values, inv_scale, clip_coef);
                  partial[idx] = sums.direction;
                  if (kParamInDirection) param_partial[idx] = sums.param;
                });
              };
              if (e.param_mode == ParamMode::master)
                run(static_cast<const float*>(e.aux));
              else
                run(static_cast<const std::remove_pointer_t<decltype(param)>*>(e.param));
            });
            return;
          }
          with_chunk<Op, true>(
              e, ch, a.variant,
              [&](auto v, auto* p, auto* g, auto* s0, auto* s1, auto* s2, auto* s3) {
                const DirectionSums sums =
                    direction_span<Op, decltype(v)::value, kParamInDirection>(
                        a, p, g, s0, s1, s2, s3, ch.size, inv_scale, clip_coef);
                partial[idx] = sums.direction;
                if (kParamInDirection) param_partial[idx] = sums.param;
              });
        });
        into(&TensorNorms::direction, 2);
        if constexpr (kParamInDirection) {
          partial.swap(param_partial);
          into(&TensorNorms::param, 0);
        }
      }
    }
    if (c.tensor_out != nullptr) return;  // the reduction phase only
    for (int64_t t = 0; t < c.n_entries; ++t)
      if (c.entries[t].active) Op::adapt(args[t], norms[t]);
  }
  for_chunks(c, [&](const Chunk& ch) {
    const TensorEntry& e = c.entries[ch.entry];
    if (!e.active) return;
    const Args& a = args[ch.entry];
    if (e.state_dtype == DType::q8) {
      const double* rounding = c.hyper + int64_t(e.group) * c.hyper_stride + Op::kNumHyper;
      const ParamStore ps = param_store(e, ch.begin, uint32_t(rounding[0]), uint32_t(rounding[1]));
      dispatch_param_grad(e, [&](auto* p, const auto* g) {
        with_variant(typename Op::Variants{}, a.variant, [&](auto v) {
          update_chunk_q8<Op, decltype(v)::value, std::remove_pointer_t<decltype(p)>,
                          std::remove_const_t<std::remove_pointer_t<decltype(g)>>>(
              a, e, ch, ps, inv_scale, clip_coef);
        });
      });
      return;
    }
    if (e.param_mode != ParamMode::nearest) {
      const double* rounding = c.hyper + int64_t(e.group) * c.hyper_stride + Op::kNumHyper;
      const ParamStore ps = param_store(e, ch.begin, uint32_t(rounding[0]), uint32_t(rounding[1]));
      with_chunk<Op>(e, ch, a.variant,
                     [&](auto v, auto* p, auto* g, auto* s0, auto* s1, auto* s2, auto* s3) {
                       if constexpr (!std::is_same_v<std::remove_pointer_t<decltype(p)>, float>)
                         update_span_stored<Op, decltype(v)::value>(a, ps, p, g, s0, s1, s2, s3,
                                                                    ch.size, inv_scale, clip_coef);
                     });
      return;
    }
    with_chunk<Op>(e, ch, a.variant,
                   [&](auto v, auto* p, auto* g, auto* s0, auto* s1, auto* s2, auto* s3) {
                     update_span<Op, decltype(v)::value>(a, p, g, s0, s1, s2, s3, ch.size,
                                                         inv_scale, clip_coef);
                   });
  });
  for (int64_t t = 0; t < c.n_entries; ++t)
    if (c.entries[t].active) c.entries[t].fresh = 0;
}

CpuKernels kernels() {
  CpuKernels k;
#define FASTOPT_CPU_STEP(Struct, name) k.step[int(OpId::name)] = &step<Struct>;
  FASTOPT_OPS(FASTOPT_CPU_STEP)
#undef FASTOPT_CPU_STEP
  k.tensor_norms = &tensor_norms;
  k.quantize = &quantize;
  k.dequantize = &dequantize;
  return k;
}

}  // namespace FASTOPT_CPU_NS
}  // namespace fastopt
