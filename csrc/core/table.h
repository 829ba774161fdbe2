// The launch table: one entry per tensor of every param group, built on the Python side and
// cached, plus the fixed-size chunks both engines iterate over.
#pragma once

#include <cstdint>

#include "dtype.h"
#include "precision.h"

namespace fastopt {

// State buffers per tensor: the most any op of the list keeps (Adan: 4); ops.h checks it.
constexpr int kMaxStates = 4;

struct TensorEntry {
  void* param;
  const void* grad;  // refreshed every step (nullptr for an empty tensor)
  void* state[kMaxStates];
  float* absmax[kMaxStates];  // state_dtype q8: each state's per-block absmax (quant8.h)
  int64_t numel;
  DType param_dtype, grad_dtype, state_dtype;
  int32_t group;         // row of the per-group hyperparameter table
  float* step;           // torch's state['step'] (a view into one buffer), or nullptr
  int32_t fresh;         // momentum buffer not yet initialised: the first update copies the grad
  int32_t active;        // the param has a grad this step
  ParamMode param_mode;  // how the update's result reaches the param (precision.h)
  void* aux;             // the mode's buffer: float32 master copy or compensation, else nullptr
  uint32_t tensor_id;    // the param's index in its optimizer: part of its rounding key
};

// The param values an update reads (its master copy in master mode), for reductions over params.
FASTOPT_HD const void* param_values(const TensorEntry& e) {
  return e.param_mode == ParamMode::master ? e.aux : e.param;
}
FASTOPT_HD DType param_values_dtype(const TensorEntry& e) {
  return e.param_mode == ParamMode::master ? DType::f32 : e.param_dtype;
}

// The param store of entry e's span that starts at element `begin`, for this step (seed, step:
// its group's rounding keys).
FASTOPT_HD ParamStore param_store(const TensorEntry& e, int64_t begin, uint32_t seed,
                                  uint32_t step) {
  return param_store(e.param_mode, e.aux, dtype_size(e.param_dtype), begin, seed, e.tensor_id,
                     step);
}

// Chunk sizes, in elements, of the engines' default plans: fixed, so results do not depend on
// the thread count (CPU) or the launch shape (CUDA).
constexpr int64_t kCpuChunkElems = int64_t(1) << 16;
constexpr int64_t kCudaChunkElems = int64_t(1) << 16;

struct Chunk {
  int64_t entry;
  int64_t begin;
  int64_t size;
};

// Per-tensor reductions an op may declare (Op::kReductions, a mask): the engines run them in a
// reduction pass between prepare() and the update pass, then hand them to Op::adapt().
enum Reduction : unsigned {
  kParamNorm = 1,      // ||p||_2
  kGradNorm = 2,       // ||g||_2 of the grad as the update reads it (unscaled, clipped)
  kDirectionNorm = 4,  // ||d||_2 of Op::direction(), the update direction before any trust ratio
};
constexpr int kNumReductions = 3;

struct TensorNorms {
  double param = 0.0;
  double grad = 0.0;
  double direction = 0.0;
};

// Values shared by all tensors of one step. A grad is read as (g * inv_scale) * clip_coef:
// the same two roundings as torch's unscale_ then clip_grad_norm_ passes.
struct StepScalars {
  float inv_scale = 1.f;  // 1 / loss scale
  float clip_coef = 1.f;  // min(1, max_norm / (norm + 1e-6)), times LAMB's rescaling
};

// The fused gradient pipeline of one step. Pointers are float32 scalars in the params' memory
// space (device memory for the CUDA engine), so a step never synchronises with the host.
struct GradPipeline {
  const float* loss_scale = nullptr;  // grads are divided by it; nullptr: no scaling
  double max_norm = 0.0;              // > 0: clip the total norm to it
  int32_t norm_type = 0;              // NormType of the total norm
  double norm_p = 2.0;
  // > 0: grads are then divided by max(1, norm / rescale_max_norm), norm being the total after
  // the clipping above (the global-norm rescaling of timm's LAMB, `max_grad_norm`)
  double rescale_max_norm = 0.0;
  float* norm_out = nullptr;   // receives the pre-clip total norm of the unscaled grads
  float* found_inf = nullptr;  // receives 1 when a grad is inf/nan (the step is skipped)
  // Two phases for grads sharded over processes (ZeRO): total_out receives this process's
  // folded (unfinished, see NormMeasure) total and nothing is updated; after an all-reduce,
  // total_in supplies every process's total in place of the local reduction. float64 scalars.
  double* total_out = nullptr;
  const double* total_in = nullptr;
  // Two more phases for the op's per-tensor reductions (Op::kReductions) of tensors sharded over
  // processes (FSDP2): tensor_out receives this process's sums of squares, kNumReductions per
  // tensor at tensor_id * kNumReductions (Plan::tensor_sums_size() doubles), and nothing is
  // updated; after an all-reduce, tensor_in supplies every process's sums in place of the local
  // reduction. Both run with total_in when the total norm is reduced too.
  double* tensor_out = nullptr;
  const double* tensor_in = nullptr;
};

}  // namespace fastopt
