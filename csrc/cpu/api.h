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
};

struct CpuKernels {
  void (*step[kNumOps])(const StepCall&);  // by OpId
  // which: 0 params, 1 grads; out[t] = folded measure of entry t (before finish())
  void (*tensor_norms)(const StepCall&, int which, float scale, NormMeasure, double* out);
};

namespace cpu_baseline {
CpuKernels kernels();
}
namespace cpu_avx2 {
CpuKernels kernels();
}
namespace cpu_avx512 {
CpuKernels kernels();
}

}  // namespace fastopt
