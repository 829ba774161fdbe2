// LARS as in mmpretrain / mmselfsup (lr lives inside the momentum buffer):
//   local_lr = lars_exclude || ||p|| == 0 || ||g|| == 0 ? 1
//            : eta * ||p|| / (||g|| + wd * ||p|| + eps)
//   d = (g + wd * p) * (local_lr * lr)
//   buf = first ? d : momentum * buf + (1 - dampening) * d     (when momentum != 0)
//   d = nesterov ? d + momentum * buf : buf
//   p -= d
// The per-tensor norms come from the engine's reduction pass (no host round trip).
#pragma once

#include <utility>

#include "table.h"

namespace fastopt {

struct Lars {
  static constexpr const char* kName = "lars";
  static constexpr int kStates = 1;  // momentum_buffer (only when momentum != 0)
  static constexpr bool kHasStep = false;
  static constexpr bool kNeedsNorms = true;
  enum Hyper {
    kLr,
    kMomentum,
    kDampening,
    kWeightDecay,
    kNesterov,
    kEta,
    kLarsExclude,
    kNumHyper
  };
  static constexpr const char* kHyperKeys[kNumHyper] = {
      "lr", "momentum!", "dampening", "weight_decay", "nesterov", "eta", "lars_exclude?"};

  // Compile-time variants (uniform per tensor): bit 0 momentum, 1 first step, 2 Nesterov.
  enum Variant { kMomentum_ = 1, kFirst = 2, kNesterov_ = 4 };
  using Variants = std::integer_sequence<int, 0, 1, 3, 5, 7>;
  static constexpr int states_used(int v) { return v & kMomentum_ ? 1 : 0; }

  struct Args {
    float actual_lr, momentum, one_minus_dampening, wd;
    int variant;
  };

  // op_scalar is the optimizer's eps (an attribute of mmpretrain's LARS, not a group key).
  FASTOPT_HD static Args prepare(const double* h, double /*step*/, TensorNorms norms, int fresh,
                                 double eps) {
    const double wd = h[kWeightDecay], w = norms.param, g = norms.grad;
    const bool trust = h[kLarsExclude] == 0.0 && w != 0.0 && g != 0.0;
    const double local_lr = trust ? h[kEta] * w / (g + wd * w + eps) : 1.0;
    Args a;
    a.actual_lr = float(local_lr * h[kLr]);
    a.momentum = float(h[kMomentum]);
    a.one_minus_dampening = float(1.0 - h[kDampening]);
    a.wd = float(wd);
    a.variant = h[kMomentum] == 0.0 ? 0
                                    : kMomentum_ | (fresh ? kFirst : 0) |
                                          (h[kNesterov] != 0.0 ? kNesterov_ : 0);
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    float d = (g + a.wd * p) * a.actual_lr;
    if constexpr ((V & kMomentum_) != 0) {
      const float buf = V & kFirst ? d : s[0] * a.momentum + a.one_minus_dampening * d;
      s[0] = buf;
      d = V & kNesterov_ ? d + a.momentum * buf : buf;
    }
    p = p - d;
  }
};

}  // namespace fastopt
