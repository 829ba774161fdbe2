// Gradient / parameter norm measures for the reduction pass, shared by every engine.
//
// Each measure folds float values into a double accumulator; partial results of fixed chunks are
// combined in chunk order, so results do not depend on the thread count.
#pragma once

#include <cmath>

#include "macros.h"

namespace fastopt {

enum class NormType : int32_t { l2 = 0, l1 = 1, inf = 2, p = 3 };

struct NormMeasure {
  NormType type;
  double p;  // exponent for NormType::p

  FASTOPT_HD double fold(double x) const {
    const double a = fabs(x);
    switch (type) {
      case NormType::l2: return x * x;
      case NormType::l1: return a;
      case NormType::inf: return a;
      default: return pow(a, p);
    }
  }
  FASTOPT_HD double combine(double acc, double v) const {
    // NaN must win for inf-norm too, so the non-finite check sees it
    return type == NormType::inf ? (((v > acc) | (v != v)) ? v : acc) : acc + v;
  }
  FASTOPT_HD double finish(double acc) const {
    switch (type) {
      case NormType::l2: return sqrt(acc);
      case NormType::l1: return acc;
      case NormType::inf: return acc;
      default: return pow(acc, 1.0 / p);
    }
  }
};

}  // namespace fastopt
