// torch's lerp(self, end, w): self + w * (end - self) for |w| < 0.5, else
// end - (end - self) * (1 - w). Which form applies is a compile-time variant bit of the ops that
// use it (w is uniform per tensor), so the element loops stay branch-free.
#pragma once

#include "macros.h"

namespace fastopt {

template <bool kLargeWeight>
FASTOPT_HD float torch_lerp(float self, float end, float w) {
  return kLargeWeight ? end - (end - self) * (1.f - w) : self + w * (end - self);
}

// The variant bit for a weight: torch's CPU and CUDA kernels test |w| < 0.5 in float.
FASTOPT_HD bool lerp_large_weight(float w) {
  return !(w < 0.5f && w > -0.5f);
}

}  // namespace fastopt
