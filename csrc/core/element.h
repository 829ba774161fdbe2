// One element through an op's functor: load (any element type), the grad read as
// (g * inv_scale) * clip_coef (torch's unscale_ then clip roundings), the update of variant V,
// store. The only copy of this sequence: the CPU loops and the CUDA kernels both call it.
#pragma once

#include <cstdint>

#include "dtype.h"
#include "precision.h"
#include "table.h"

namespace fastopt {

// The states variant V of Op uses, loaded (unused ones are 0 and never touched in memory).
template <class Op, int V, class S>
FASTOPT_HD void load_states(float (&s)[kMaxStates], const S* s0, const S* s1, const S* s2,
                            const S* s3, int64_t i) {
  constexpr int kUsed = Op::states_used(V);
  s[0] = kUsed & 1 ? load(s0 + i) : 0.f;
  s[1] = kUsed & 2 ? load(s1 + i) : 0.f;
  s[2] = kUsed & 4 ? load(s2 + i) : 0.f;
  s[3] = kUsed & 8 ? load(s3 + i) : 0.f;
}

template <class Op, int V, class P, class G, class S>
FASTOPT_HD void update_element(const typename Op::Args& a, P* p, const G* g, S* s0, S* s1, S* s2,
                               S* s3, int64_t i, float inv_scale, float clip_coef) {
  constexpr int kUsed = Op::states_used(V);
  float pv = load(p + i);
  const float gv = (load(g + i) * inv_scale) * clip_coef;
  float s[kMaxStates];
  load_states<Op, V>(s, s0, s1, s2, s3, i);
  Op::template update<V>(a, pv, gv, s);
  store(p + i, pv);
  if (kUsed & 1) store(s0 + i, s[0]);
  if (kUsed & 2) store(s1 + i, s[1]);
  if (kUsed & 4) store(s2 + i, s[2]);
  if (kUsed & 8) store(s3 + i, s[3]);
}

// One element's update in mode M (precision.h) with its states already in s (loaded, or
// dequantized from 8-bit codes), which it updates: the param read and written as the mode says.
// ps.aux points at the span's element 0, as p does.
template <class Op, int V, ParamMode M, class P, class G>
FASTOPT_HD void update_values(const typename Op::Args& a, const ParamStore& ps, P* p, const G* g,
                              int64_t i, float* s, float inv_scale, float clip_coef) {
  const float p0 = load_param<M>(ps, p, i);
  float pv = p0;
  const float gv = (load(g + i) * inv_scale) * clip_coef;
  Op::template update<V>(a, pv, gv, s);
  store_param<M>(ps, p, i, p0, pv);
}

// update_element through a param store in mode M: update_values between the states' load and
// store.
template <class Op, int V, ParamMode M, class P, class G, class S>
FASTOPT_HD void update_element_stored(const typename Op::Args& a, const ParamStore& ps, P* p,
                                      const G* g, S* s0, S* s1, S* s2, S* s3, int64_t i,
                                      float inv_scale, float clip_coef) {
  constexpr int kUsed = Op::states_used(V);
  float s[kMaxStates];
  load_states<Op, V>(s, s0, s1, s2, s3, i);
  update_values<Op, V, M>(a, ps, p, g, i, s, inv_scale, clip_coef);
  if (kUsed & 1) store(s0 + i, s[0]);
  if (kUsed & 2) store(s1 + i, s[1]);
  if (kUsed & 4) store(s2 + i, s[2]);
  if (kUsed & 8) store(s3 + i, s[3]);
}

// The op's update direction at one element (ops with kDirectionNorm), nothing stored.
template <class Op, int V, class P, class G, class S>
FASTOPT_HD float direction_element(const typename Op::Args& a, const P* p, const G* g, const S* s0,
                                   const S* s1, const S* s2, const S* s3, int64_t i,
                                   float inv_scale, float clip_coef) {
  const float pv = load(p + i);
  const float gv = (load(g + i) * inv_scale) * clip_coef;
  float s[kMaxStates];
  load_states<Op, V>(s, s0, s1, s2, s3, i);
  return Op::template direction<V>(a, pv, gv, s);
}

}  // namespace fastopt
