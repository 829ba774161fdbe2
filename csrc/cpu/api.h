// What one engine call receives, and the per-ISA kernel tables of the CPU engine.
#pragma once

#include <cstdint>

#include "../core/norms.h"
#include "../core/ops.h"
#include "../core/table.h"

namespace fastopt {

struct StepCall {
  TensorEntry* entries;
  int64_t n_entries;
  const Chunk* chunks;
  int64_t n_chunks;
  int64_t total_elems;
  const double* hyper;  // [groups][hyper_stride]
  int64_t hyper_stride;
  StepScalars scalars;
  int num_threads;
  double* tensor_out = nullptr;       // GradPipeline::tensor_out: only the op's reductions
  const double* tensor_in = nullptr;  // GradPipeline::tensor_in: every process's sums
};

struct CpuKernels {
  void (*step[kNumOps])(const StepCall&);  // by OpId
  // which: 0 params, 1 grads; out[t] = folded measure of entry t (before finish())
  void (*tensor_norms)(const StepCall&, int which, float scale, NormMeasure, double* out);
  // Blockwise 8-bit codes of whole tensors (state-dict conversions; core/quant8.h)
  void (*quantize)(const float* x, int64_t n, bool is_signed, uint8_t* codes, float* absmax);
  void (*dequantize)(const uint8_t* codes, const float* absmax, int64_t n, bool is_signed,
                     float* x);
};

// The CPU code paths, worst to best: X(name, "the CPU features it needs"). The one list: the
// engine is compiled once per entry with -m<feature> for each feature (CMakeLists.txt reads the
// X lines, as it reads the op list), and cpu_engine.cpp picks the best one this CPU supports.
#define FASTOPT_CPU_ISAS(X)                                     \
  X(baseline, "")                                               \
  X(avx2, "avx2 fma f16c")                                      \
  X(avx512, "avx512f avx512bw avx512vl avx512dq avx2 fma f16c") \
  X(avx512_bf16, "avx512f avx512bw avx512vl avx512dq avx512bf16 avx2 fma f16c")

#define FASTOPT_DECLARE_ISA(name, features) \
  namespace cpu_##name {                    \
    CpuKernels kernels();                   \
  }
FASTOPT_CPU_ISAS(FASTOPT_DECLARE_ISA)
#undef FASTOPT_DECLARE_ISA

}  // namespace fastopt
