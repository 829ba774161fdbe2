// SGD with momentum, dampening, weight decay, Nesterov and maximize — torch.optim.SGD:
//   g = maximize ? -g : g;  g += wd * p
//   buf = first ? g : momentum * buf + (1 - dampening) * g
//   g = nesterov ? g + momentum * buf : buf        (when momentum != 0)
//   p -= lr * g
#pragma once

#include "table.h"

namespace fastopt {

struct Sgd {
  static constexpr const char* kName = "sgd";
  static constexpr int kStates = 1;  // momentum_buffer (only when momentum != 0)
  static constexpr int kMinStates = 0;
  static constexpr bool kHasStep = false;
  static constexpr bool kNeedsNorms = false;
  enum Hyper { kLr, kMomentum, kDampening, kWeightDecay, kNesterov, kMaximize, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr",           "momentum", "dampening",
                                                        "weight_decay", "nesterov", "maximize"};

  struct Args {
    float neg_lr, momentum, one_minus_dampening, wd;
    bool use_momentum, first, nesterov, maximize;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, TensorNorms, int fresh,
                                 double /*op_scalar*/) {
    Args a;
    a.neg_lr = float(-h[kLr]);
    a.momentum = float(h[kMomentum]);
    a.one_minus_dampening = float(1.0 - h[kDampening]);
    a.wd = float(h[kWeightDecay]);
    a.use_momentum = h[kMomentum] != 0.0;
    a.first = fresh != 0;
    a.nesterov = h[kNesterov] != 0.0;
    a.maximize = h[kMaximize] != 0.0;
    return a;
  }

  FASTOPT_HD static bool uses_state(const Args& a, int k) { return k == 0 && a.use_momentum; }

  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    if (a.maximize) g = -g;
    if (a.wd != 0.f) g = g + a.wd * p;
    if (a.use_momentum) {
      float buf = a.first ? g : s[0] * a.momentum + a.one_minus_dampening * g;
      s[0] = buf;
      g = a.nesterov ? g + a.momentum * buf : buf;
    }
    p = p + a.neg_lr * g;
  }
};

}  // namespace fastopt
