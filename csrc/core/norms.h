// Gradient / parameter norm measures for the reduction pass, shared by every engine.
//
// Each measure folds float values into a double accumulator; partial results of fixed chunks are
// combined in chunk order, so results do not depend on the thread count.
#pragma once

#include <cmath>

#include "macros.h"

namespace fastopt {

enum class NormType : int32_t { l2 = 0, l1 = 1, inf = 2, p = 3 };

struct NormMeasure {
  NormType type;
  double p;  // exponent for NormType::p

  FASTOPT_HD double fold(double x) const {
    const double a = fabs(x);
    switch (type) {
      case NormType::l2: return x * x;
      case NormType::l1: return a;
      case NormType::inf: return a;
      default: return pow(a, p);
    }
  }
  FASTOPT_HD double combine(double acc, double v) const {
    // NaN must win for inf-norm too, so the non-finite check sees it
    return type == NormType::inf ? (((v > acc) | (v != v)) ? v : acc) : acc + v;
  }
  FASTOPT_HD double finish(double acc) const {
    switch (type) {
      case NormType::l2: return sqrt(acc);
      case NormType::l1: return acc;
      case NormType::inf: return acc;
      default: return pow(acc, 1.0 / p);
    }
  }
};

// The factor the update multiplies unscaled grads by: torch's clip_grad_norm_ coefficient
// clamp(max_norm / (norm + 1e-6), max=1) in float32 (clamp propagates nan) when max_norm > 0,
// then timm's LAMB rescaling, a division by max(1, norm' / rescale_max_norm) of the total norm
// norm' after that clipping, when rescale_max_norm > 0. Shared by the engines' pipelines.
FASTOPT_HD float clip_coefficient(float norm, double max_norm, double rescale_max_norm) {
  float clip = 1.f;
  if (max_norm > 0.0) {
    const float coef = float(max_norm) / (norm + 1e-6f);
    clip = (coef < 1.f || coef != coef) ? coef : 1.f;
  }
  if (rescale_max_norm > 0.0) {
    const float ratio = (max_norm > 0.0 ? norm * clip : norm) / float(rescale_max_norm);
    if (ratio > 1.f || ratio != ratio) clip = clip / ratio;
  }
  return clip;
}

}  // namespace fastopt
