// Adan (Xie et al. 2022) as timm's / the official sail-sg implementation; the step count t is
// the group's 'step' (a group key, counted by Python as those implementations do):
//   d = g - g_prev            (g_prev: the previous grad, kept negated; 0 at t == 1)
//   m = beta1 * m + (1 - beta1) * g
//   e = beta2 * e + (1 - beta2) * d
//   u = beta2 * d + g;  n = beta3 * n + (1 - beta3) * u * u
//   denom = sqrt(n) / sqrt(1 - beta3^t) + eps
//   no_prox: p *= 1 - lr * wd;  p -= lr / (1 - beta1^t) * m / denom
//                               p -= lr * beta2 / (1 - beta2^t) * e / denom
//   else:    the same two subtractions, then p /= 1 + lr * wd
#pragma once

#include <cmath>
#include <utility>

#include "table.h"

namespace fastopt {

struct Adan {
  static constexpr const char* kName = "adan";
  static constexpr int kStates = 4;
  static constexpr const char* kStateKeys[kStates] = {"exp_avg", "exp_avg_sq", "exp_avg_diff",
                                                      "neg_pre_grad"};
  // states never negative (exp_avg_sq): 8-bit states use the unsigned map (quant8.h)
  static constexpr unsigned kUnsignedStates = 2;
  static constexpr bool kHasStep = false;  // per group: the 'step' key
  static constexpr unsigned kReductions = 0;
  enum Hyper { kLr, kBeta1, kBeta2, kBeta3, kEps, kWeightDecay, kNoProx, kStep, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr",  "betas.0",      "betas.1", "betas.2",
                                                        "eps", "weight_decay", "no_prox", "step?"};

  // Compile-time variants: bit 0 first step (no previous grad), 1 no_prox.
  enum Variant { kFirst = 1, kNoProx_ = 2 };
  using Variants = std::integer_sequence<int, 0, 1, 2, 3>;
  static constexpr int states_used(int) { return 15; }  // the first step writes neg_pre_grad too

  struct Args {
    float beta1, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3;
    float bias_correction3_sqrt, eps, neg_step_size, neg_step_size_diff;
    float decay;    // no_prox: 1 - lr * wd
    float divisor;  // else: 1 + lr * wd
    int variant;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int fresh) {
    const double lr = h[kLr], b1 = h[kBeta1], b2 = h[kBeta2], b3 = h[kBeta3], t = h[kStep];
    Args a;
    a.beta1 = float(b1);
    a.one_minus_beta1 = float(1.0 - b1);
    a.beta2 = float(b2);
    a.one_minus_beta2 = float(1.0 - b2);
    a.beta3 = float(b3);
    a.one_minus_beta3 = float(1.0 - b3);
    a.bias_correction3_sqrt = float(sqrt(1.0 - pow(b3, t)));
    a.eps = float(h[kEps]);
    a.neg_step_size = float(-(lr / (1.0 - pow(b1, t))));
    a.neg_step_size_diff = float(-(lr * b2 / (1.0 - pow(b2, t))));
    a.decay = float(1.0 - lr * h[kWeightDecay]);
    a.divisor = float(1.0 + lr * h[kWeightDecay]);
    a.variant = (fresh || t == 1.0 ? kFirst : 0) | (h[kNoProx] != 0.0 ? kNoProx_ : 0);
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    const float neg_prev = V & kFirst ? -g : s[3];
    const float d = neg_prev + g;
    const float m = s[0] * a.beta1 + a.one_minus_beta1 * g;
    const float e = s[2] * a.beta2 + a.one_minus_beta2 * d;
    const float u = d * a.beta2 + g;
    const float n = s[1] * a.beta3 + a.one_minus_beta3 * u * u;
    const float denom = sqrtf(n) / a.bias_correction3_sqrt + a.eps;
    if constexpr ((V & kNoProx_) != 0) p = p * a.decay;
    p = p + a.neg_step_size * m / denom;
    p = p + a.neg_step_size_diff * e / denom;
    if constexpr ((V & kNoProx_) == 0) p = p / a.divisor;
    s[0] = m;
    s[1] = n;
    s[2] = e;
    s[3] = -g;
  }
};

}  // namespace fastopt
