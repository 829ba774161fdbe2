// Adagrad — torch.optim.Adagrad (dense grads):
//   g = maximize ? -g : g;  g += wd * p
//   clr = lr / (1 + (t - 1) * lr_decay)
//   sum += g * g;  p -= clr * g / (sqrt(sum) + eps)
// 'sum' starts at initial_accumulator_value (set by Python when the state is created).
#pragma once

#include <cmath>
#include <utility>

#include "table.h"

namespace fastopt {

struct Adagrad {
  static constexpr const char* kName = "adagrad";
  static constexpr int kStates = 1;
  static constexpr const char* kStateKeys[kStates] = {"sum"};
  // states never negative (sum >= 0): 8-bit states use the unsigned map (quant8.h)
  static constexpr unsigned kUnsignedStates = 1;
  static constexpr bool kHasStep = true;
  static constexpr unsigned kReductions = 0;
  enum Hyper { kLr, kLrDecay, kWeightDecay, kEps, kMaximize, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr", "lr_decay", "weight_decay", "eps",
                                                        "maximize"};

  // Compile-time variant: bit 0, an L2 term (torch adds wd * p only when wd != 0).
  enum Variant { kL2 = 1 };
  using Variants = std::integer_sequence<int, 0, 1>;
  static constexpr int states_used(int) { return 1; }

  struct Args {
    float neg_clr, eps, wd, grad_sign;
    int variant;
  };

  FASTOPT_HD static Args prepare(const double* h, double step, int /*fresh*/) {
    Args a;
    a.neg_clr = float(-(h[kLr] / (1.0 + (step - 1.0) * h[kLrDecay])));
    a.eps = float(h[kEps]);
    a.wd = float(h[kWeightDecay]);
    a.grad_sign = h[kMaximize] != 0.0 ? -1.f : 1.f;
    a.variant = h[kWeightDecay] != 0.0 ? kL2 : 0;
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    g = g * a.grad_sign;
    if constexpr ((V & kL2) != 0) g = add_scaled(g, a.wd, p);
    s[0] = s[0] + g * g;
    const float std = sqrtf(s[0]) + a.eps;
    p = p + a.neg_clr * g / std;
  }
};

}  // namespace fastopt
