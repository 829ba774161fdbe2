// Averaged models (MMEngine's ExponentialMovingAverage, MomentumAnnealingEMA and
// StochasticWeightAverage): the averaged tensor is the "param" and the tensor it follows (the
// source model's param or buffer) is read in the grad slot. With w the group's "lr":
//   ema:   avg = torch.lerp(avg, src, w)             avg.lerp_(src, w) (torch_lerp_fused)
//   mean:  avg = avg + w * (src - avg)               avg.add_(src - avg, alpha=w): torch rounds
//                                                    the difference and w to the avg's dtype
//   copy:  avg = src                                 avg.copy_(src) (first update, buffers)
// Not an optimizer: no state, no step count, no reductions.
#pragma once

#include <utility>

#include "dtype.h"
#include "lerp.h"
#include "table.h"

namespace fastopt {

struct Ema {
  static constexpr const char* kName = "ema";
  // the table has at least one state slot per op; no variant reads or writes it
  static constexpr int kStates = 1;
  static constexpr const char* kStateKeys[kStates] = {"unused"};
  // every state may be negative: 8-bit states all use the signed map (quant8.h)
  static constexpr unsigned kUnsignedStates = 0;
  static constexpr bool kHasStep = false;
  static constexpr unsigned kReductions = 0;
  // mode: kModeEma, kModeMean or kModeCopy; round: the avg's dtype in the mean's difference
  // (kRoundNone for float32 averages, kRoundHalf, kRoundBfloat16)
  enum Hyper { kLr, kMode, kRound, kNumHyper };
  static constexpr const char* kHyperKeys[kNumHyper] = {"lr", "mode", "round?"};
  enum Mode { kModeEma = 0, kModeMean = 1, kModeCopy = 2 };
  enum Round { kRoundNone = 0, kRoundHalf = 1, kRoundBfloat16 = 2 };

  // Compile-time variants: bit 0 copy, 1 mean, 2 lerp's large-weight form, 3/4 the mean's
  // difference rounded to float16 / bfloat16.
  enum Variant { kCopy = 1, kMean = 2, kLargeWeight = 4, kHalfDiff = 8, kBfloat16Diff = 16 };
  using Variants = std::integer_sequence<int, 0, kLargeWeight, kCopy, kMean, kMean | kHalfDiff,
                                         kMean | kBfloat16Diff>;
  static constexpr int states_used(int) { return 0; }

  struct Args {
    float weight;
    int variant;
  };

  FASTOPT_HD static Args prepare(const double* h, double /*step*/, int /*fresh*/) {
    Args a;
    a.weight = float(h[kLr]);
    const int mode = int(h[kMode]);
    const int round = int(h[kRound]);
    if (mode == kModeMean && round == kRoundHalf) a.weight = half_to_float(float_to_half(a.weight));
    if (mode == kModeMean && round == kRoundBfloat16)
      a.weight = bfloat16_to_float(float_to_bfloat16(a.weight));
    if (mode == kModeCopy)
      a.variant = kCopy;
    else if (mode == kModeMean)
      a.variant = kMean | (round == kRoundHalf       ? kHalfDiff
                           : round == kRoundBfloat16 ? kBfloat16Diff
                                                     : 0);
    else
      a.variant = lerp_large_weight(a.weight) ? kLargeWeight : 0;
    return a;
  }

  template <int V>
  FASTOPT_HD static void update(const Args& a, float& p, float g, float* /*s*/) {
    if constexpr ((V & kCopy) != 0) {
      p = g;
    } else if constexpr ((V & kMean) != 0) {
      float d = g - p;
      if constexpr ((V & kHalfDiff) != 0) d = half_to_float(float_to_half(d));
      if constexpr ((V & kBfloat16Diff) != 0) d = bfloat16_to_float(float_to_bfloat16(d));
      p = add_scaled(p, a.weight, d);  // torch's add with alpha: one rounding of w * d + p
    } else {
      p = torch_lerp_fused<(V & kLargeWeight) != 0>(p, g, a.weight);
    }
  }
};

}  // namespace fastopt
