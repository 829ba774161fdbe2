// One element through an optimizer's functor: load (any element type), the grad read as
// (g * inv_scale) * clip_coef (torch's unscale_ then clip roundings), the update of variant V,
// store. The only copy of this sequence: the CPU loops and the CUDA kernels both call it.
#pragma once

#include <cstdint>

#include "dtype.h"
#include "table.h"

namespace fastopt {

template <class Op, int V, class P, class G, class S>
FASTOPT_HD void update_element(const typename Op::Args& a, P* p, const G* g, S* s0, S* s1, S* s2,
                               int64_t i, float inv_scale, float clip_coef) {
  constexpr int kUsed = Op::states_used(V);  // states the variant reads and writes
  float pv = load(p + i);
  const float gv = (load(g + i) * inv_scale) * clip_coef;
  float s[kMaxStates] = {0.f, 0.f, 0.f};
  if (kUsed & 1) s[0] = load(s0 + i);
  if (kUsed & 2) s[1] = load(s1 + i);
  if (kUsed & 4) s[2] = load(s2 + i);
  Op::template update<V>(a, pv, gv, s);
  store(p + i, pv);
  if (kUsed & 1) store(s0 + i, s[0]);
  if (kUsed & 2) store(s1 + i, s[1]);
  if (kUsed & 4) store(s2 + i, s[2]);
}

}  // namespace fastopt
