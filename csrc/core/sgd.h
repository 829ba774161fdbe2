// SGD with momentum, dampening, weight decay, Nesterov and maximize — torch.optim.SGD:
//   g = maximize ? -g : g;  g += wd * p
//   buf = first ? g : momentum * buf + (1 - dampening) * g
//   g = nesterov ? g + momentum * buf : buf        (when momentum != 0)
//   p -= lr * g
#pragma once

#include <utility>

#include "table.h"

namespace fastopt {

struct Sgd {
  static constexpr const char* kName = "sgd";
  static constexpr int kStates = 1;  // (only when momentum != 0)
  static constexpr const char* kStateKeys[kStates] = {"momentum_buffer"};
  // every state may be negative: 8-bit states all use the signed map (quant8.h)
  static constexpr unsigned kUnsignedStates = 0;
  static constexpr bool kHasStep = false;
  static constexpr unsigned kReductions = 0;
  enum Hyper { kLr, kMomentum, kDampening, kWeightDecay, kNesterov, kMaximize, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr",           "momentum!", "dampening",
                                                        "weight_decay", "nesterov",  "maximize"};

  // Compile-time variants (uniform per tensor): bit 0 momentum, 1 first step, 2 Nesterov.
  enum Variant { kMomentum_ = 1, kFirst = 2, kNesterov_ = 4 };
  using Variants = std::integer_sequence<int, 0, 1, 3, 5, 7>;
  static constexpr int states_used(int v) { return v & kMomentum_ ? 1 : 0; }

  struct Args {
    float neg_lr, momentum, one_minus_dampening, wd, grad_sign;
    uint32_t wd_mask;  // torch adds wd * p only when wd != 0 (0 * inf would be nan)
    int variant;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int fresh) {
    Args a;
    a.neg_lr = float(-h[kLr]);
    a.momentum = float(h[kMomentum]);
    a.one_minus_dampening = float(1.0 - h[kDampening]);
    a.wd = float(h[kWeightDecay]);
    a.wd_mask = mask_of(h[kWeightDecay] != 0.0);
    a.grad_sign = h[kMaximize] != 0.0 ? -1.f : 1.f;
    a.variant = h[kMomentum] == 0.0
                    ? 0
                    : kMomentum_ | (fresh ? kFirst : 0) | (h[kNesterov] != 0.0 ? kNesterov_ : 0);
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    g = g * a.grad_sign;
    g = add_scaled_masked(g, a.wd, p, a.wd_mask);
    if constexpr ((V & kMomentum_) != 0) {
      const float buf = V & kFirst ? g : s[0] * a.momentum + a.one_minus_dampening * g;
      s[0] = buf;
      g = V & kNesterov_ ? g + a.momentum * buf : buf;
    }
    p = p + a.neg_lr * g;
  }
};

}  // namespace fastopt
