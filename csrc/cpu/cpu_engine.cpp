// The CPU engine behind the Engine interface: fixed-size chunks of every entry, the kernels of
// the best instruction set this CPU supports, and the gradient pipeline on the host.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#include "../core/ops.h"
#include "../core/quant8.h"
#include "../engine.h"
#include "api.h"

namespace fastopt {

namespace {

// __builtin_cpu_supports takes string literals only, hence one line per feature name.
bool cpu_has_feature(const std::string& f) {
  __builtin_cpu_init();
  if (f == "avx2") return __builtin_cpu_supports("avx2");
  if (f == "fma") return __builtin_cpu_supports("fma");
  if (f == "f16c") return __builtin_cpu_supports("f16c");
  if (f == "avx512f") return __builtin_cpu_supports("avx512f");
  if (f == "avx512bw") return __builtin_cpu_supports("avx512bw");
  if (f == "avx512vl") return __builtin_cpu_supports("avx512vl");
  if (f == "avx512dq") return __builtin_cpu_supports("avx512dq");
  if (f == "avx512bf16") return __builtin_cpu_supports("avx512bf16");
  throw std::logic_error("cpu_has_feature: no check for '" + f + "'");
}

bool cpu_supports(const char* features) {
  std::string f;
  for (const char* c = features;; ++c) {
    if (*c == ' ' || *c == '\0') {
      if (!f.empty() && !cpu_has_feature(f)) return false;
      f.clear();
      if (*c == '\0') return true;
    } else {
      f += *c;
    }
  }
}

struct Isa {
  const char* name;
  const char* features;
  CpuKernels (*kernels)();
};

// worst to best, as in the list
const Isa kIsas[] = {
#define FASTOPT_ISA_ENTRY(name, features) {#name, features, &cpu_##name::kernels},
    FASTOPT_CPU_ISAS(FASTOPT_ISA_ENTRY)
#undef FASTOPT_ISA_ENTRY
};

std::string isa_names() {
  std::string s;
  for (const Isa& isa : kIsas) s += std::string(s.empty() ? "" : ", ") + isa.name;
  return s;
}

const Isa& choose_isa() {
  const char* want = std::getenv("FASTOPT_CPU_ISA");
  if (want != nullptr && *want != '\0') {
    for (const Isa& isa : kIsas)
      if (std::strcmp(want, isa.name) == 0) {
        if (!cpu_supports(isa.features))
          throw std::runtime_error(std::string("FASTOPT_CPU_ISA=") + want +
                                   " but this CPU does not support it (needs " + isa.features +
                                   ")");
        return isa;
      }
    throw std::runtime_error("FASTOPT_CPU_ISA must be one of " + isa_names() + ", got " + want);
  }
  for (int i = int(std::size(kIsas)) - 1; i > 0; --i)
    if (cpu_supports(kIsas[i].features)) return kIsas[i];
  return kIsas[0];
}

const Isa& chosen_isa() {
  static const Isa& isa = choose_isa();
  return isa;
}

const CpuKernels& cpu_kernels() {
  static const CpuKernels k = chosen_isa().kernels();
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
      if (entries[idx].state_dtype == DType::q8 && chunk_elems % kQuantBlock != 0)
        throw std::invalid_argument("8-bit states need chunks of a multiple of " +
                                    std::to_string(kQuantBlock) + " elements (their blocks)");
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
    StepCall c = call(in, scalars);
    c.tensor_out = pipe.tensor_out;
    c.tensor_in = pipe.tensor_in;
    step_(c);
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
  return chosen_isa().name;
}

void cpu_quantize_8bit(const float* x, int64_t n, bool is_signed, uint8_t* codes, float* absmax) {
  cpu_kernels().quantize(x, n, is_signed, codes, absmax);
}

void cpu_dequantize_8bit(const uint8_t* codes, const float* absmax, int64_t n, bool is_signed,
                         float* x) {
  cpu_kernels().dequantize(codes, absmax, n, is_signed, x);
}

std::vector<std::string> cpu_isas_supported() {
  std::vector<std::string> out;
  for (const Isa& isa : kIsas)
    if (cpu_supports(isa.features)) out.push_back(isa.name);
  return out;
}

std::vector<std::string> cpu_isas_built() {
  std::vector<std::string> out;
  for (const Isa& isa : kIsas) out.push_back(isa.name);
  return out;
}

std::unique_ptr<Engine> make_cpu_engine(const std::string& kind,
                                        const std::vector<TensorEntry>& entries,
                                        int64_t chunk_elems) {
  return std::make_unique<CpuEngine>(kind, entries, chunk_elems);
}

}  // namespace fastopt
