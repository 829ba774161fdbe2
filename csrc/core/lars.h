// LARS as in mmpretrain / mmselfsup (lr lives inside the momentum buffer):
//   local_lr = lars_exclude || ||p|| == 0 || ||g|| == 0 ? 1
//            : eta * ||p|| / (||g|| + wd * ||p|| + eps)
//   d = (g + wd * p) * (local_lr * lr)
//   buf = first ? d : momentum * buf + (1 - dampening) * d     (when momentum != 0)
//   d = nesterov ? d + momentum * buf : buf
//   p -= d
// The per-tensor norms come from the engines' reduction pass (no host round trip).
#pragma once

#include <utility>

#include "table.h"

namespace fastopt {

struct Lars {
  static constexpr const char* kName = "lars";
  static constexpr int kStates = 1;  // (only when momentum != 0)
  static constexpr const char* kStateKeys[kStates] = {"momentum_buffer"};
  // every state may be negative: 8-bit states all use the signed map (quant8.h)
  static constexpr unsigned kUnsignedStates = 0;
  static constexpr bool kHasStep = false;
  static constexpr unsigned kReductions = kParamNorm | kGradNorm;
  enum Hyper {
    kLr,
    kMomentum,
    kDampening,
    kWeightDecay,
    kNesterov,
    kEta,
    kEps,
    kLarsExclude,
    kNumHyper
  };
  static constexpr const char* kHyperKeys[kNumHyper] = {
      "lr", "momentum!", "dampening", "weight_decay", "nesterov", "eta", "eps", "lars_exclude?"};

  // Compile-time variants (uniform per tensor): bit 0 momentum, 1 first step, 2 Nesterov.
  enum Variant { kMomentum_ = 1, kFirst = 2, kNesterov_ = 4 };
  using Variants = std::integer_sequence<int, 0, 1, 3, 5, 7>;
  static constexpr int states_used(int v) { return v & kMomentum_ ? 1 : 0; }

  struct Args {
    float actual_lr, momentum, one_minus_dampening, wd;
    int variant;
    int trust;                  // the trust ratio applies (lars_exclude is false)
    double lr, eta, wd_d, eps;  // for adapt(): the trust ratio is formed in double
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int fresh) {
    Args a;
    a.lr = h[kLr];
    a.eta = h[kEta];
    a.wd_d = h[kWeightDecay];
    a.eps = h[kEps];
    a.trust = h[kLarsExclude] == 0.0;
    a.actual_lr = float(a.lr);
    a.momentum = float(h[kMomentum]);
    a.one_minus_dampening = float(1.0 - h[kDampening]);
    a.wd = float(a.wd_d);
    a.variant = h[kMomentum] == 0.0
                    ? 0
                    : kMomentum_ | (fresh ? kFirst : 0) | (h[kNesterov] != 0.0 ? kNesterov_ : 0);
    return a;
  }

  FASTOPT_HD static void adapt(Args& a, const TensorNorms& n) {
    const double w = n.param, g = n.grad;
    const bool trust = a.trust && w != 0.0 && g != 0.0;
    const double local_lr = trust ? a.eta * w / (g + a.wd_d * w + a.eps) : 1.0;
    a.actual_lr = float(local_lr * a.lr);
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    float d = add_scaled(g, a.wd, p) * a.actual_lr;  // mmpretrain: d_p.add(p, alpha=wd)
    if constexpr ((V & kMomentum_) != 0) {
      const float buf = V & kFirst ? d : s[0] * a.momentum + a.one_minus_dampening * d;
      s[0] = buf;
      d = V & kNesterov_ ? d + a.momentum * buf : buf;
    }
    p = p - d;
  }
};

}  // namespace fastopt
