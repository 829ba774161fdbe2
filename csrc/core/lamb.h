// LAMB (You et al. 2019) as timm's Lamb / mmpretrain's (NVIDIA's NvLamb variant); t is the
// group's 'step' key, counted by Python as those implementations do:
//   m = grad_averaging ? lerp(m, g, 1 - beta1) : beta1 * m + g
//   v = beta2 * v + (1 - beta2) * g * g
//   d = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps) + wd * p    (bc = 1 - beta^t, or 1)
//   r = wd != 0 || always_adapt ? (||p|| > 0 && ||d|| > 0 ? ||p|| / ||d|| : 1) : 1
//   r = trust_clip ? min(r, 1) : r
//   p -= lr * (d * r)
// The global-norm clipping of max_grad_norm is the engines' gradient pipeline (see table.h).
// ||d|| is a reduction over the direction: the update pass recomputes d from the stored states
// (cheaper than a scratch buffer of one float per element).
#pragma once

#include <cmath>
#include <utility>

#include "lerp.h"
#include "table.h"

namespace fastopt {

struct Lamb {
  static constexpr const char* kName = "lamb";
  static constexpr int kStates = 2;
  static constexpr const char* kStateKeys[kStates] = {"exp_avg", "exp_avg_sq"};
  // states never negative (exp_avg_sq): 8-bit states use the unsigned map (quant8.h)
  static constexpr unsigned kUnsignedStates = 2;
  static constexpr bool kHasStep = false;  // per group: the 'step' key
  static constexpr unsigned kReductions = kParamNorm | kDirectionNorm;
  enum Hyper {
    kLr,
    kBeta1,
    kBeta2,
    kEps,
    kWeightDecay,
    kBiasCorrection,
    kGradAveraging,
    kTrustClip,
    kAlwaysAdapt,
    kStep,
    kNumHyper
  };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr",
                                                        "betas.0",
                                                        "betas.1",
                                                        "eps",
                                                        "weight_decay",
                                                        "bias_correction",
                                                        "grad_averaging",
                                                        "trust_clip",
                                                        "always_adapt",
                                                        "step?"};

  // Compile-time variants: bit 0 grad averaging (lerp), 1 lerp's large-weight form.
  enum Variant { kAveraging = 1, kLargeWeight = 2 };
  using Variants = std::integer_sequence<int, 0, 1, 3>;
  static constexpr int states_used(int) { return 3; }

  struct Args {
    float beta1, weight, beta2, one_minus_beta2, bias_correction1, bias_correction2_sqrt, eps, wd;
    float neg_lr, ratio;
    uint32_t wd_mask;  // timm adds wd * p only when wd != 0
    int variant;
    int adapt, trust_clip;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int /*fresh*/) {
    const double b1 = h[kBeta1], b2 = h[kBeta2], t = h[kStep];
    const bool bias = h[kBiasCorrection] != 0.0, averaging = h[kGradAveraging] != 0.0;
    Args a;
    a.beta1 = float(b1);
    a.weight = averaging ? float(1.0 - b1) : 1.f;  // timm's beta3
    a.beta2 = float(b2);
    a.one_minus_beta2 = float(1.0 - b2);
    a.bias_correction1 = bias ? float(1.0 - pow(b1, t)) : 1.f;
    a.bias_correction2_sqrt = bias ? float(sqrt(1.0 - pow(b2, t))) : 1.f;
    a.eps = float(h[kEps]);
    a.wd = float(h[kWeightDecay]);
    a.wd_mask = mask_of(h[kWeightDecay] != 0.0);
    a.neg_lr = float(-h[kLr]);
    a.ratio = 1.f;
    a.adapt = h[kWeightDecay] != 0.0 || h[kAlwaysAdapt] != 0.0;
    a.trust_clip = h[kTrustClip] != 0.0;
    a.variant = averaging ? kAveraging | (lerp_large_weight(a.weight) ? kLargeWeight : 0) : 0;
    return a;
  }

  // The trust ratio, from ||p|| and ||d||.
  FASTOPT_HD static void adapt(Args& a, const TensorNorms& n) {
    double r = n.param > 0.0 && n.direction > 0.0 ? n.param / n.direction : 1.0;
    if (a.trust_clip && r > 1.0) r = 1.0;
    a.ratio = a.adapt ? float(r) : 1.f;
  }

  // The moments after this grad (not stored) and the direction they give.
  template <int V>
  FASTOPT_HD static float moments(const Args& a, float p, float g, const float* s, float& m,
                                  float& v) {
    if constexpr ((V & kAveraging) != 0)
      m = torch_lerp<(V & kLargeWeight) != 0>(s[0], g, a.weight);
    else
      m = s[0] * a.beta1 + a.weight * g;
    v = s[1] * a.beta2 + a.one_minus_beta2 * g * g;
    const float denom = sqrtf(v) / a.bias_correction2_sqrt + a.eps;
    return add_scaled_masked(m / a.bias_correction1 / denom, a.wd, p, a.wd_mask);
  }

  template <int V>
  FASTOPT_HD static float direction(const Args& a, float p, float g, const float* s) {
    float m, v;
    return moments<V>(a, p, g, s, m, v);
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* s) {
    float m, v;
    const float d = moments<V>(a, p, g, s, m, v);
    p = p + a.neg_lr * (d * a.ratio);
    s[0] = m;
    s[1] = v;
  }
};

}  // namespace fastopt
