// Lion (Chen et al. 2023) as the lion-pytorch package:
//   p *= 1 - lr * wd
//   p -= lr * sign(beta1 * m + (1 - beta1) * g)
//   m = beta2 * m + (1 - beta2) * g
#pragma once

#include <cmath>
#include <utility>

#include "table.h"

namespace fastopt {

struct Lion {
  static constexpr const char* kName = "lion";
  static constexpr int kStates = 1;
  static constexpr const char* kStateKeys[kStates] = {"exp_avg"};
  // every state may be negative: 8-bit states all use the signed map (quant8.h)
  static constexpr unsigned kUnsignedStates = 0;
  static constexpr bool kHasStep = false;
  static constexpr unsigned kReductions = 0;
  enum Hyper { kLr, kBeta1, kBeta2, kWeightDecay, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr", "betas.0", "betas.1", "weight_decay"};

  using Variants = std::integer_sequence<int, 0>;
  static constexpr int states_used(int) { return 1; }

  struct Args {
    float decay, neg_lr, beta1, one_minus_beta1, beta2, one_minus_beta2;
    int variant;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int /*fresh*/) {
    Args a;
    a.decay = float(1.0 - h[kLr] * h[kWeightDecay]);
    a.neg_lr = float(-h[kLr]);
    a.beta1 = float(h[kBeta1]);
    a.one_minus_beta1 = float(1.0 - h[kBeta1]);
    a.beta2 = float(h[kBeta2]);
    a.one_minus_beta2 = float(1.0 - h[kBeta2]);
    a.variant = 0;
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    p = p * a.decay;
    // lion-pytorch's m.mul(beta1).add(g, alpha=1 - beta1): torch's add rounds alpha * g + x
    // once (add_scaled), which decides the sign where the two terms cancel
    const float c = add_scaled(s[0] * a.beta1, a.one_minus_beta1, g);
    // torch.sign: 0 for 0, NaN stays NaN
    const float u = c > 0.f ? 1.f : (c < 0.f ? -1.f : c * 0.f);
    p = p + a.neg_lr * u;
    s[0] = add_scaled(s[0] * a.beta2, a.one_minus_beta2, g);
  }
};

}  // namespace fastopt
