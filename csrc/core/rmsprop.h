// RMSprop — torch.optim.RMSprop:
//   g = maximize ? -g : g;  g += wd * p
//   sq = alpha * sq + (1 - alpha) * g * g
//   centered: ga = lerp(ga, g, 1 - alpha);  avg = sqrt(sq - ga * ga) + eps
//   else:     avg = sqrt(sq) + eps
//   momentum > 0: buf = momentum * buf + g / avg;  p -= lr * buf
//   else:         p -= lr * g / avg
#pragma once

#include <cmath>
#include <utility>

#include "lerp.h"
#include "table.h"

namespace fastopt {

struct Rmsprop {
  static constexpr const char* kName = "rmsprop";
  static constexpr int kStates = 3;  // momentum_buffer: momentum > 0; grad_avg: centered
  static constexpr const char* kStateKeys[kStates] = {"square_avg", "momentum_buffer", "grad_avg"};
  // states never negative (square_avg): 8-bit states use the unsigned map (quant8.h)
  static constexpr unsigned kUnsignedStates = 1;
  static constexpr bool kHasStep = true;
  static constexpr unsigned kReductions = 0;
  enum Hyper { kLr, kAlpha, kEps, kWeightDecay, kMomentum, kCentered, kMaximize, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {
      "lr", "alpha", "eps", "weight_decay", "momentum!", "centered!", "maximize"};

  // Compile-time variants: bit 0 momentum, 1 centered, 2 lerp's large-weight form (centered).
  enum Variant { kMomentum_ = 1, kCentered_ = 2, kLargeWeight = 4 };
  using Variants = std::integer_sequence<int, 0, 1, 2, 3, 6, 7>;
  static constexpr int states_used(int v) {
    return 1 | (v & kMomentum_ ? 2 : 0) | (v & kCentered_ ? 4 : 0);
  }

  struct Args {
    float neg_lr, alpha, one_minus_alpha, eps, wd, momentum, grad_sign;
    uint32_t wd_mask;
    int variant;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int /*fresh*/) {
    Args a;
    a.neg_lr = float(-h[kLr]);
    a.alpha = float(h[kAlpha]);
    a.one_minus_alpha = float(1.0 - h[kAlpha]);
    a.eps = float(h[kEps]);
    a.wd = float(h[kWeightDecay]);
    a.wd_mask = mask_of(h[kWeightDecay] != 0.0);
    a.momentum = float(h[kMomentum]);
    a.grad_sign = h[kMaximize] != 0.0 ? -1.f : 1.f;
    const bool centered = h[kCentered] != 0.0;
    a.variant = (h[kMomentum] > 0.0 ? kMomentum_ : 0) | (centered ? kCentered_ : 0) |
                (centered && lerp_large_weight(a.one_minus_alpha) ? kLargeWeight : 0);
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    g = g * a.grad_sign;
    g = add_scaled_masked(g, a.wd, p, a.wd_mask);
    const float sq = s[0] * a.alpha + a.one_minus_alpha * g * g;
    s[0] = sq;
    float avg;
    if constexpr ((V & kCentered_) != 0) {
      const float ga = torch_lerp<(V & kLargeWeight) != 0>(s[2], g, a.one_minus_alpha);
      s[2] = ga;
      avg = sqrtf(sq + -1.f * ga * ga);
    } else {
      avg = sqrtf(sq);
    }
    avg = avg + a.eps;
    if constexpr ((V & kMomentum_) != 0) {
      const float buf = s[1] * a.momentum + 1.f * g / avg;
      s[1] = buf;
      p = p + a.neg_lr * buf;
    } else {
      p = p + a.neg_lr * g / avg;
    }
  }
};

}  // namespace fastopt
