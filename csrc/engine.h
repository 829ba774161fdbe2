// The interface between a Plan (the cached table and its per-step refresh, see plan.h) and the
// engine that runs its steps on one device: the CPU engine (cpu/) or the CUDA engine (cuda/, on
// a GPU or under the host emulation of simt/). Plain C++: no Python, no CUDA headers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "core/norms.h"
#include "core/table.h"

namespace fastopt {

// What an engine reads each step; the Plan refreshes it (grads, active flags, hyperparameters).
struct StepInputs {
  TensorEntry* entries;
  int64_t n_entries;
  const double* hyper;  // [groups][hyper_stride]
  int64_t hyper_stride;
  int64_t n_groups;
  // Per group: a float32 scalar in device memory that replaces the group's lr (a tensor lr, read
  // by the device at run time so a captured CUDA graph follows it), or nullptr. Device engines
  // only.
  const float* const* lr_device;
  int num_threads;  // CPU engine
  void* stream;     // cudaStream_t of the CUDA engine (torch's current stream)
};

// One kernel launch of a step, as a device engine would issue it (for tests and diagnostics).
struct LaunchRecord {
  std::string kernel;
  int64_t tensors = 0;
  int64_t blocks = 0;
  int64_t threads = 0;
  int64_t vector_chunks = 0;  // chunks whose pointers allow 16-byte accesses
  int64_t scalar_chunks = 0;
  int64_t param_bytes = 0;  // size of the kernel's parameters
};

class Engine {
 public:
  virtual ~Engine() = default;
  // "cpu", "cuda" or "simt" (the CUDA engine under host emulation)
  virtual const char* backend() const = 0;
  virtual int64_t num_chunks() const = 0;
  // Device engines keep per-tensor values (prepared arguments, first-step flags, norm partials)
  // in scratch memory the caller allocates on the params' device, once per plan.
  virtual int64_t workspace_bytes() const { return 0; }
  virtual void bind_workspace(void* /*ptr*/, void* /*stream*/) {}
  // One optimizer step over every active entry, through the gradient pipeline.
  virtual void step(const StepInputs& in, const GradPipeline& pipe) = 0;
  // Folded per-tensor measures (see NormMeasure) of params (which=0) or grads (which=1) * scale.
  virtual std::vector<double> tensor_norms(const StepInputs& in, int which, NormMeasure m,
                                           float scale) = 0;
  // The launches step() would make, without making them (empty for the CPU engine).
  virtual std::vector<LaunchRecord> launches(const StepInputs& /*in*/,
                                             const GradPipeline& /*pipe*/) {
    return {};
  }
};

// Engine factories; kind is an optimizer name (Sgd::kName, ...). chunk_elems 0: the default.
std::unique_ptr<Engine> make_cpu_engine(const std::string& kind,
                                        const std::vector<TensorEntry>& entries,
                                        int64_t chunk_elems);
std::unique_ptr<Engine> make_cuda_engine(const std::string& kind,
                                         const std::vector<TensorEntry>& entries, int device,
                                         int64_t chunk_elems);

// The CPU code path in use (the best this CPU supports; FASTOPT_CPU_ISA overrides).
const char* cpu_isa();
// The CPU code paths compiled in (worst to best) and those this CPU can run.
std::vector<std::string> cpu_isas_built();
std::vector<std::string> cpu_isas_supported();
// Blockwise 8-bit quantization of whole host tensors (core/quant8.h) by that code path.
void cpu_quantize_8bit(const float* x, int64_t n, bool is_signed, uint8_t* codes, float* absmax);
void cpu_dequantize_8bit(const uint8_t* codes, const float* absmax, int64_t n, bool is_signed,
                         float* x);

}  // namespace fastopt
