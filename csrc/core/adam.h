// Adam / AdamW (decoupled weight decay), with amsgrad and maximize — torch.optim.Adam(W):
//   g = maximize ? -g : g
//   decoupled ? p *= 1 - lr * wd : g += wd * p
//   m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g * g
//   v_hat = amsgrad ? (vmax = max(vmax, v)) : v
//   p -= (lr / (1 - beta1^t)) * m / (sqrt(v_hat) / sqrt(1 - beta2^t) + eps)
#pragma once

#include <cmath>
#include <utility>

#include "lerp.h"
#include "table.h"

namespace fastopt {

struct Adam {
  static constexpr const char* kName = "adam";
  static constexpr int kStates = 3;  // max_exp_avg_sq: amsgrad only
  static constexpr const char* kStateKeys[kStates] = {"exp_avg", "exp_avg_sq", "max_exp_avg_sq"};
  // never negative (exp_avg_sq, max_exp_avg_sq): 8-bit states use the unsigned map (quant8.h)
  static constexpr unsigned kUnsignedStates = 2 | 4;
  static constexpr bool kHasStep = true;
  static constexpr unsigned kReductions = 0;
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
      "lr",           "betas.0",  "betas.1",  "eps",
      "weight_decay", "amsgrad!", "maximize", "decoupled_weight_decay"};

  // Compile-time variants (uniform per tensor): bit 0 amsgrad, bit 1 lerp's large-weight form,
  // bit 2 a grad that enters as is (no maximize, no L2 term): the common case skips a multiply,
  // an fma and a select per element, which count in the 16-bit steps (bound by arithmetic).
  enum Variant { kAmsgrad_ = 1, kLargeWeight = 2, kPlainGrad = 4 };
  using Variants = std::integer_sequence<int, 0, 1, 2, 3, 4, 5, 6, 7>;
  static constexpr int states_used(int v) { return v & kAmsgrad_ ? 7 : 3; }

  struct Args {
    float neg_step_size, bias_correction2_sqrt, eps, one_minus_beta1, beta2, one_minus_beta2;
    float grad_sign;   // -1 with maximize
    float decay;       // 1 - lr * wd for AdamW, else 1 (exact no-op)
    float wd;          // L2 coefficient for Adam, else 0
    uint32_t wd_mask;  // torch adds wd * p only when it has an L2 term (0 * inf would be nan)
    int variant;
  };

  // Scalars are formed in double and rounded once, as torch does with Python floats.
  FASTOPT_HD static Args prepare(const double* h, double step, int /*fresh*/) {
    const double lr = h[kLr], beta1 = h[kBeta1], beta2 = h[kBeta2], wd = h[kWeightDecay];
    const bool decoupled = h[kDecoupled] != 0.0;
    Args a;
    a.neg_step_size = float(-(lr / (1.0 - pow(beta1, step))));
    a.bias_correction2_sqrt = float(sqrt(1.0 - pow(beta2, step)));
    a.eps = float(h[kEps]);
    a.one_minus_beta1 = float(1.0 - beta1);
    a.beta2 = float(beta2);
    a.one_minus_beta2 = float(1.0 - beta2);
    a.grad_sign = h[kMaximize] != 0.0 ? -1.f : 1.f;
    a.decay = decoupled ? float(1.0 - lr * wd) : 1.f;
    a.wd = decoupled ? 0.f : float(wd);
    a.wd_mask = mask_of(!decoupled && wd != 0.0);
    a.variant = (h[kAmsgrad] != 0.0 ? kAmsgrad_ : 0) |
                (lerp_large_weight(a.one_minus_beta1) ? kLargeWeight : 0) |
                (h[kMaximize] == 0.0 && a.wd_mask == 0 ? kPlainGrad : 0);
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    if constexpr ((V & kPlainGrad) == 0) g = g * a.grad_sign;
    p = p * a.decay;
    if constexpr ((V & kPlainGrad) == 0) g = add_scaled_masked(g, a.wd, p, a.wd_mask);
    const float m = torch_lerp<(V & kLargeWeight) != 0>(s[0], g, a.one_minus_beta1);
    float v = s[1] * a.beta2;
    v = v + a.one_minus_beta2 * g * g;
    float v_hat = v;
    if constexpr ((V & kAmsgrad_) != 0) {
      v_hat = ((v > s[2]) | (v != v)) ? v : s[2];  // torch.maximum propagates NaN
      s[2] = v_hat;
    }
    const float denom = sqrtf(v_hat) / a.bias_correction2_sqrt + a.eps;
    p = p + a.neg_step_size * m / denom;
    s[0] = m;
    s[1] = v;
  }
};

}  // namespace fastopt
