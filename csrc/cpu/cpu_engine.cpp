// The CPU engine behind the Engine interface: fixed-size chunks of every entry, the kernels of
// the best instruction set this CPU supports, and the gradient pipeline on the host.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "../core/ops.h"
#include "../engine.h"
#include "api.h"

namespace fastopt {

namespace {

bool cpu_has(const char* feature) {
  __builtin_cpu_init();
  if (std::strcmp(feature, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (std::strcmp(feature, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
  return true;
}

const char* choose_isa() {
  const char* want = std::getenv("FASTOPT_CPU_ISA");
  if (want != nullptr && *want != '\0') {
    for (const char* isa : {"baseline", "avx2", "avx512"})
      if (std::strcmp(want, isa) == 0) {
        if (!cpu_has(isa))
          throw std::runtime_error(std::string("FASTOPT_CPU_ISA=") + want +
                                   " but this CPU does not support it");
        return isa;
      }
    throw std::runtime_error(std::string("FASTOPT_CPU_ISA must be baseline, avx2 or avx512, got ") +
                             want);
  }
  if (cpu_has("avx512")) return "avx512";
  if (cpu_has("avx2")) return "avx2";
  return "baseline";
}

const CpuKernels& cpu_kernels() {
  static const CpuKernels k = [] {
    const std::string isa = cpu_isa();
    if (isa == "avx512") return cpu_avx512::kernels();
    if (isa == "avx2") return cpu_avx2::kernels();
    return cpu_baseline::kernels();
  }();
  return k;
}

class CpuEngine final : public Engine {
 public:
  CpuEngine(const std::string& kind, const std::vector<TensorEntry>& entries, int64_t chunk_elems)
      : kernels_(cpu_kernels()) {
    with_op(kind.c_str(), [&](auto, OpId id) { step_ = kernels_.step[int(id)]; });
    if (step_ == nullptr) throw std::invalid_argument("unknown optimizer kind '" + kind + "'");
    if (chunk_elems == 0) chunk_elems = kCpuChunkElems;
    if (chunk_elems < 0) throw std::invalid_argument("chunk_elems must be positive");
    for (int64_t idx = 0; idx < int64_t(entries.size()); ++idx) {
      const int64_t numel = entries[idx].numel;
      for (int64_t b = 0; b < numel; b += chunk_elems)
        chunks_.push_back(Chunk{idx, b, std::min(chunk_elems, numel - b)});
      total_elems_ += numel;
    }
  }

  const char* backend() const override { return "cpu"; }
  int64_t num_chunks() const override { return int64_t(chunks_.size()); }

  void step(const StepInputs& in, const GradPipeline& pipe) override {
    StepScalars scalars;
    if (pipe.loss_scale != nullptr)  // as torch: scale.double().reciprocal().float()
      scalars.inv_scale = float(1.0 / double(*pipe.loss_scale));
    if (pipe.max_norm > 0.0 || pipe.rescale_max_norm > 0.0 || pipe.norm_out != nullptr ||
        pipe.found_inf != nullptr || pipe.total_out != nullptr) {
      const NormMeasure m{NormType(pipe.norm_type), pipe.norm_p};
      double total = 0.0;
      if (pipe.total_in != nullptr) {
        total = *pipe.total_in;
      } else {
        std::vector<double> per_tensor(size_t(in.n_entries));
        kernels_.tensor_norms(call(in, scalars), 1, scalars.inv_scale, m, per_tensor.data());
        for (double v : per_tensor) total = m.combine(total, v);
      }
      if (pipe.total_out != nullptr) {
        *pipe.total_out = total;
        return;
      }
      const float norm = float(m.finish(total));
      const bool nonfinite = !std::isfinite(norm);
      if (pipe.norm_out != nullptr) *pipe.norm_out = norm;
      if (pipe.found_inf != nullptr) {
        *pipe.found_inf = nonfinite ? 1.f : 0.f;
        if (nonfinite) return;
      }
      scalars.clip_coef = clip_coefficient(norm, pipe.max_norm, pipe.rescale_max_norm);
    }
    step_(call(in, scalars));
  }

  std::vector<double> tensor_norms(const StepInputs& in, int which, NormMeasure m,
                                   float scale) override {
    StepScalars scalars;
    scalars.inv_scale = scale;
    std::vector<double> out(size_t(in.n_entries));
    kernels_.tensor_norms(call(in, scalars), which, scale, m, out.data());
    return out;
  }

 private:
  StepCall call(const StepInputs& in, StepScalars scalars) const {
    StepCall c;
    c.entries = in.entries;
    c.n_entries = in.n_entries;
    c.chunks = chunks_.data();
    c.n_chunks = num_chunks();
    c.total_elems = total_elems_;
    c.hyper = in.hyper;
    c.hyper_stride = in.hyper_stride;
    c.scalars = scalars;
    c.num_threads = in.num_threads < 1 ? 1 : in.num_threads;
    return c;
  }

  CpuKernels kernels_;
  void (*step_)(const StepCall&) = nullptr;
  std::vector<Chunk> chunks_;
  int64_t total_elems_ = 0;
};

}  // namespace

const char* cpu_isa() {
  static const char* isa = choose_isa();
  return isa;
}

std::unique_ptr<Engine> make_cpu_engine(const std::string& kind,
                                        const std::vector<TensorEntry>& entries,
                                        int64_t chunk_elems) {
  return std::make_unique<CpuEngine>(kind, entries, chunk_elems);
}

}  // namespace fastopt
