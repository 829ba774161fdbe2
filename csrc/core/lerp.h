// torch's lerp(self, end, w): self + w * (end - self) for |w| < 0.5, else
// end - (end - self) * (1 - w). Which form applies is a compile-time variant bit of the ops that
// use it (w is uniform per tensor), so the element loops stay branch-free.
#pragma once

#include <cmath>

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

// torch.lerp as its vectorized CPU kernel (AVX2/AVX-512) and its CUDA kernel compute it: one
// rounding, fma(w, end - self, self) for |w| < 0.5, else fma(w - 1, end - self, end)
// (measured bitwise against lerp_ of torch 2.13 on AVX-512; the averaged models use it).
template <bool kLargeWeight>
FASTOPT_HD float torch_lerp_fused(float self, float end, float w) {
  return kLargeWeight ? fmaf(w - 1.f, end - self, end) : fmaf(w, end - self, self);
}

}  // namespace fastopt
