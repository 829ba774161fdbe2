// The launch table: one entry per tensor of every param group, built on the Python side and
// cached, plus the fixed-size chunks both engines iterate over.
#pragma once

#include <cstdint>

#include "dtype.h"

namespace fastopt {

constexpr int kMaxStates = 3;

struct TensorEntry {
  void* param;
  const void* grad;  // refreshed every step; nullptr when the param has no grad this step
  void* state[kMaxStates];
  int64_t numel;
  DType param_dtype, grad_dtype, state_dtype;
  int32_t group;  // row of the per-group hyperparameter table
  float* step;    // torch's state['step'] (a view into one buffer), or nullptr
  int32_t fresh;  // momentum buffer not yet initialised: the first update copies the grad
};

struct Chunk {
  int64_t entry;
  int64_t begin;
  int64_t size;
};

// Per-tensor norms an optimizer may need before its update pass (LARS trust ratios).
struct TensorNorms {
  double param;  // ||p||_2
  double grad;   // ||g||_2 of the (scaled) gradient
};

// Values shared by all tensors of one step.
struct StepScalars {
  float grad_scale = 1.f;  // applied to every grad as it is read (unscale * clip)
  double op_scalar = 0.;   // optimizer-level constant (LARS eps)
};

}  // namespace fastopt
