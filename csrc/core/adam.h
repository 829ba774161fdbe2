// Adam / AdamW (decoupled weight decay), with amsgrad and maximize — torch.optim.Adam(W):
//   g = maximize ? -g : g
//   decoupled ? p *= 1 - lr * wd : g += wd * p
//   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
//   v_hat = amsgrad ? (vmax = max(vmax, v)) : v
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)
#pragma once

#include <cmath>

#include "table.h"

namespace fastopt {

struct Adam {
  static constexpr const char* kName = "adam";
  static constexpr int kStates = 3;  // exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only)
  static constexpr int kMinStates = 2;
  static constexpr bool kHasStep = true;
  static constexpr bool kNeedsNorms = false;
  enum Hyper {
    kLr,
    kBeta1,
    kBeta2,
    kEps,
    kWeightDecay,
    kAmsgrad,
    kMaximize,
    kDecoupled,
    kNumHyper
  };
  static constexpr const char* kHyperKeys[kNumHyper] = {
      "lr",      "betas.0",  "betas.1", "eps", "weight_decay",
      "amsgrad", "maximize", "decoupled_weight_decay"};

  struct Args {
    float neg_step_size, bias_correction2_sqrt, eps, one_minus_beta1, beta2, one_minus_beta2;
    float wd, decay;  // L2 coefficient, or the decoupled factor 1 - lr * wd
    bool decoupled, amsgrad, maximize;
  };

  // Scalars are formed in double and rounded once, as torch does with Python floats.
  FASTOPT_HD static Args prepare(const double* h, double step, TensorNorms, int /*fresh*/,
                                 double /*op_scalar*/) {
    const double lr = h[kLr], beta1 = h[kBeta1], beta2 = h[kBeta2], wd = h[kWeightDecay];
    Args a;
    a.neg_step_size = float(-(lr / (1.0 - pow(beta1, step))));
    a.bias_correction2_sqrt = float(sqrt(1.0 - pow(beta2, step)));
    a.eps = float(h[kEps]);
    a.one_minus_beta1 = float(1.0 - beta1);
    a.beta2 = float(beta2);
    a.one_minus_beta2 = float(1.0 - beta2);
    a.decoupled = h[kDecoupled] != 0.0;
    a.wd = a.decoupled ? 0.f : float(wd);
    a.decay = a.decoupled ? float(1.0 - lr * wd) : 1.f;
    a.amsgrad = h[kAmsgrad] != 0.0;
    a.maximize = h[kMaximize] != 0.0;
    return a;
  }

  FASTOPT_HD static bool uses_state(const Args& a, int k) { return k < 2 || a.amsgrad; }

  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    if (a.maximize) g = -g;
    if (a.decoupled) {
      p = p * a.decay;
    } else if (a.wd != 0.f) {
      g = g + a.wd * p;
    }
    float m = s[0], v = s[1];
    // torch's lerp: self + w * (end - self) for |w| < 0.5, else end - (end - self) * (1 - w)
    m = a.one_minus_beta1 < 0.5f ? m + a.one_minus_beta1 * (g - m)
                                 : g - (g - m) * (1.f - a.one_minus_beta1);
    v = v * a.beta2;
    v = v + a.one_minus_beta2 * g * g;
    float v_hat = v;
    if (a.amsgrad) {
      const float vmax = s[2];
      v_hat = (v > vmax || v != v) ? v : vmax;  // torch.maximum propagates NaN
      s[2] = v_hat;
    }
    const float denom = sqrtf(v_hat) / a.bias_correction2_sqrt + a.eps;
    p = p + a.neg_step_size * m / denom;
    s[0] = m;
    s[1] = v;
  }
};

}  // namespace fastopt
