// The pybind11 module fastopt._C, and fastopt._C_simt when compiled with FASTOPT_SIMT (the same
// API; cpu tensors run through the CUDA engine under the host emulation). Neither links libtorch:
// Python hands them tensors' data pointers, sizes and dtype codes (see fastopt/ops/plan.py).
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include "core/ops.h"
#include "core/quant8.h"
#include "plan.h"
#if FASTOPT_WITH_CUDA || FASTOPT_SIMT
#include "cuda/api.h"
#endif
#if FASTOPT_SIMT
#include <array>
namespace fastopt {
void simt_selftest(const std::string& kernel, std::array<unsigned, 3> grid,
                   std::array<unsigned, 3> block, int64_t data, int64_t n, int32_t param);
}
#endif

namespace py = pybind11;
using fastopt::Plan;

#ifndef FASTOPT_VERSION
#define FASTOPT_VERSION "unknown"
#endif
#ifndef FASTOPT_MODULE_NAME
#define FASTOPT_MODULE_NAME _C
#endif
#ifndef FASTOPT_CUDA_ARCHS
#define FASTOPT_CUDA_ARCHS ""
#endif

namespace {

using fastopt::kCpuChunkElems;

// The catalog of the op list (core/ops.h) and the codes Python hands the engine: what
// fastopt.ops.catalog reads instead of repeating it.
template <class Op>
py::dict op_record() {
  py::dict d;
  d["name"] = Op::kName;
  d["hyper_keys"] = std::vector<std::string>(std::begin(Op::kHyperKeys), std::end(Op::kHyperKeys));
  d["state_keys"] = std::vector<std::string>(std::begin(Op::kStateKeys), std::end(Op::kStateKeys));
  d["has_step"] = Op::kHasStep;
  std::vector<std::string> unsigned_states;
  for (int k = 0; k < Op::kStates; ++k)
    if ((Op::kUnsignedStates >> k) & 1u) unsigned_states.push_back(Op::kStateKeys[k]);
  d["unsigned_states"] = unsigned_states;
  std::vector<std::string> reductions;
  if (Op::kReductions & fastopt::kParamNorm) reductions.push_back("param_norm");
  if (Op::kReductions & fastopt::kGradNorm) reductions.push_back("grad_norm");
  if (Op::kReductions & fastopt::kDirectionNorm) reductions.push_back("direction_norm");
  d["reductions"] = reductions;
  return d;
}

py::dict catalog() {
  py::dict ops;
#define FASTOPT_OP_RECORD(Struct, name) ops[#name] = op_record<fastopt::Struct>();
  FASTOPT_OPS(FASTOPT_OP_RECORD)
#undef FASTOPT_OP_RECORD
  py::dict dtypes, layouts, norm_types, param_modes;
  for (fastopt::DType d : {fastopt::DType::f32, fastopt::DType::f16, fastopt::DType::bf16})
    dtypes[py::str(fastopt::dtype_name(d))] = int(d);
  layouts["contiguous"] = int(fastopt::Layout::contiguous);
  layouts["dense"] = int(fastopt::Layout::dense);
  layouts["staged"] = int(fastopt::Layout::staged);
  norm_types["l2"] = int(fastopt::NormType::l2);
  norm_types["l1"] = int(fastopt::NormType::l1);
  norm_types["inf"] = int(fastopt::NormType::inf);
  norm_types["p"] = int(fastopt::NormType::p);
  param_modes["nearest"] = int(fastopt::ParamMode::nearest);
  param_modes["master"] = int(fastopt::ParamMode::master);
  param_modes["kahan"] = int(fastopt::ParamMode::kahan);
  param_modes["stochastic"] = int(fastopt::ParamMode::stochastic);
  py::list rounding_keys;
  for (const char* k : fastopt::kRoundingKeys) rounding_keys.append(py::str(k));
  py::dict c;
  c["ops"] = ops;
  c["dtypes"] = dtypes;
  c["layouts"] = layouts;
  c["norm_types"] = norm_types;
  c["param_modes"] = param_modes;
  c["rounding_keys"] = rounding_keys;
  c["max_states"] = fastopt::kMaxStates;
  c["cpu_chunk_elems"] = kCpuChunkElems;
  c["cuda_chunk_elems"] = fastopt::kCudaChunkElems;
  py::dict quant;
  quant["block"] = fastopt::kQuantBlock;
  quant["min_elems"] = fastopt::kQuantMinElems;
  quant["state_dtype"] = int(fastopt::DType::q8);
  quant["signed_map"] = std::vector<float>(std::begin(fastopt::quant::kMapSigned),
                                           std::end(fastopt::quant::kMapSigned));
  quant["unsigned_map"] = std::vector<float>(std::begin(fastopt::quant::kMapUnsigned),
                                             std::end(fastopt::quant::kMapUnsigned));
  c["quant"] = quant;
  return c;
}

py::dict build_info() {
  py::dict d;
  d["version"] = FASTOPT_VERSION;
#if FASTOPT_SIMT
  d["backends"] = py::make_tuple("simt");
#elif FASTOPT_WITH_CUDA
  d["backends"] = py::make_tuple("cpu", "cuda");
#else
  d["backends"] = py::make_tuple("cpu");
#endif
  d["cpu_isa"] = fastopt::cpu_isa();
  d["cpu_isas_built"] = py::cast(fastopt::cpu_isas_built());
  d["cpu_isas_supported"] = py::cast(fastopt::cpu_isas_supported());
  d["openmp"] = _OPENMP;
  d["omp_max_threads"] = omp_get_max_threads();
  d["compiler"] = __VERSION__;
  d["cpu_chunk_elems"] = kCpuChunkElems;
#if FASTOPT_WITH_CUDA
  const int v = fastopt::cuda::runtime_version();
  d["cuda_runtime"] = std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10) + " (static)";
  d["cuda_archs"] = FASTOPT_CUDA_ARCHS;
  const int driver = fastopt::cuda::driver_version();
  d["cuda_driver"] = driver > 0
                         ? std::to_string(driver / 1000) + "." + std::to_string(driver % 1000 / 10)
                         : std::string("none");
#endif
#if FASTOPT_WITH_CUDA || FASTOPT_SIMT
  d["cuda_param_bytes"] = fastopt::cuda::param_bytes();
#endif
  return d;
}

std::vector<py::dict> launch_records(const std::vector<fastopt::LaunchRecord>& records) {
  std::vector<py::dict> out;
  for (const fastopt::LaunchRecord& r : records) {
    py::dict d;
    d["kernel"] = r.kernel;
    d["tensors"] = r.tensors;
    d["blocks"] = r.blocks;
    d["threads"] = r.threads;
    d["vector_chunks"] = r.vector_chunks;
    d["scalar_chunks"] = r.scalar_chunks;
    d["param_bytes"] = r.param_bytes;
    out.push_back(std::move(d));
  }
  return out;
}

fastopt::GradPipeline pipeline(int64_t loss_scale, double max_norm, double rescale_max_norm,
                               int norm_type, double norm_p, int64_t norm_out, int64_t found_inf,
                               int64_t total_out = 0, int64_t total_in = 0, int64_t tensor_out = 0,
                               int64_t tensor_in = 0) {
  if (norm_type < 0 || norm_type > int(fastopt::NormType::p))
    throw std::invalid_argument("bad norm type " + std::to_string(norm_type));
  fastopt::GradPipeline pipe;
  pipe.loss_scale = reinterpret_cast<const float*>(loss_scale);
  pipe.max_norm = max_norm;
  pipe.rescale_max_norm = rescale_max_norm;
  pipe.norm_type = norm_type;
  pipe.norm_p = norm_p;
  pipe.norm_out = reinterpret_cast<float*>(norm_out);
  pipe.found_inf = reinterpret_cast<float*>(found_inf);
  pipe.total_out = reinterpret_cast<double*>(total_out);
  pipe.total_in = reinterpret_cast<const double*>(total_in);
  pipe.tensor_out = reinterpret_cast<double*>(tensor_out);
  pipe.tensor_in = reinterpret_cast<const double*>(tensor_in);
  return pipe;
}

#if FASTOPT_WITH_CUDA || FASTOPT_SIMT
py::dict limits_dict(const fastopt::cuda::LaunchLimits& l) {
  py::dict d;
  d["max_tensors"] = l.max_tensors;
  d["max_blocks"] = l.max_blocks;
  d["chunk_elems"] = l.chunk_elems;
  return d;
}
#endif

}  // namespace

PYBIND11_MODULE(FASTOPT_MODULE_NAME, m) {
  m.doc() = "fastopt fused multi-tensor optimizer engine";
  m.attr("CPU_CHUNK_ELEMS") = kCpuChunkElems;
  m.def("build_info", &build_info, "What this build of the module contains");
  m.def("cpu_isa", &fastopt::cpu_isa,
        "The CPU code path in use (one of build_info()['cpu_isas_built'])");
  m.def("catalog", &catalog,
        "The op list: per op its hyperparameter keys, state keys in engine order, whether it "
        "counts steps and the per-tensor reductions it needs; the dtype, layout and norm type "
        "codes; chunk sizes");
  m.def(
      "philox4x32_10",
      [](std::array<uint32_t, 4> counter, std::array<uint32_t, 2> key) {
        const fastopt::Philox4 r = fastopt::philox4x32_10(
            fastopt::Philox4{{counter[0], counter[1], counter[2], counter[3]}}, key[0], key[1]);
        return std::array<uint32_t, 4>{r.v[0], r.v[1], r.v[2], r.v[3]};
      },
      py::arg("counter"), py::arg("key"),
      "The generator of stochastic rounding (csrc/core/precision.h), for its known-answer tests");
  m.def(
      "tensor_reads",
      [](std::optional<std::string> path) { return fastopt::tensor_reads(path.value_or("")); },
      py::arg("path") = py::none(),
      "How plans read each tensor every step: 'shim' (torch's stable C shim on the at::Tensor "
      "a tensor object holds), 'accessors' (torch's C getters and methods, called directly) or "
      "'methods' (the same with Tensor.data_ptr()); a name switches to that path (tests, "
      "benchmarks); returns the path in use");
  m.def("tensor_reads_unavailable", &fastopt::tensor_reads_unavailable,
        "Why the shim path of tensor reads is off here ('' when it is on)");
  m.def(
      "quantize_8bit",
      [](int64_t x, int64_t n, bool is_signed, int64_t codes, int64_t absmax) {
        py::gil_scoped_release release;
        fastopt::cpu_quantize_8bit(reinterpret_cast<const float*>(x), n, is_signed,
                                   reinterpret_cast<uint8_t*>(codes),
                                   reinterpret_cast<float*>(absmax));
      },
      py::arg("x"), py::arg("n"), py::arg("signed"), py::arg("codes"), py::arg("absmax"),
      "Blockwise 8-bit quantization (core/quant8.h, by the CPU code path in use) of n float32 "
      "values at address x into n "
      "uint8 codes and ceil(n / block) float32 absmax (addresses of host memory)");
  m.def(
      "dequantize_8bit",
      [](int64_t codes, int64_t absmax, int64_t n, bool is_signed, int64_t x) {
        py::gil_scoped_release release;
        fastopt::cpu_dequantize_8bit(reinterpret_cast<const uint8_t*>(codes),
                                     reinterpret_cast<const float*>(absmax), n, is_signed,
                                     reinterpret_cast<float*>(x));
      },
      py::arg("codes"), py::arg("absmax"), py::arg("n"), py::arg("signed"), py::arg("x"),
      "The float32 values of n blockwise 8-bit codes (addresses of host memory)");
  m.def(
      "encode_8bit",
      [](int64_t x, int64_t n, bool is_signed, bool search, int64_t codes) {
        const float* in = reinterpret_cast<const float*>(x);
        uint8_t* out = reinterpret_cast<uint8_t*>(codes);
        for (int64_t i = 0; i < n; ++i)
          out[i] = is_signed ? (search ? fastopt::quant::encode_search<true>(in[i])
                                       : fastopt::quant::encode<true>(in[i]))
                             : (search ? fastopt::quant::encode_search<false>(in[i])
                                       : fastopt::quant::encode<false>(in[i]));
      },
      py::arg("x"), py::arg("n"), py::arg("signed"), py::arg("search"), py::arg("codes"),
      "Codes of n normalized float32 values by the binary search (the device's encoder) or the "
      "table (the host's), for the tests that they agree");
  m.def("hyper_keys", &fastopt::hyper_keys, py::arg("kind"),
        "Group keys an optimizer kind reads each step");

  py::class_<fastopt::EntrySpec>(m, "Entry", py::module_local(),
                                 "One tensor of a plan's table (see csrc/plan.h)")
      .def(py::init([](int64_t param, std::vector<py::object> states, int64_t numel,
                       int32_t param_dtype, int32_t grad_dtype, int32_t state_dtype, int32_t group,
                       py::object step, int32_t fresh, py::object expected_grad_dtype,
                       int32_t param_mode, py::object aux, int64_t tensor_id,
                       std::vector<py::object> absmax) {
             fastopt::EntrySpec e;
             e.param = param;
             e.states = std::move(states);
             e.numel = numel;
             e.param_dtype = param_dtype;
             e.grad_dtype = grad_dtype;
             e.state_dtype = state_dtype;
             e.group = group;
             e.step = std::move(step);
             e.fresh = fresh;
             e.expected_grad_dtype = std::move(expected_grad_dtype);
             e.param_mode = param_mode;
             e.aux = std::move(aux);
             e.tensor_id = tensor_id;
             e.absmax = std::move(absmax);
             return e;
           }),
           py::kw_only(), py::arg("param"), py::arg("states"), py::arg("numel"),
           py::arg("param_dtype"), py::arg("grad_dtype"), py::arg("state_dtype"), py::arg("group"),
           py::arg("step"), py::arg("fresh"), py::arg("expected_grad_dtype"),
           py::arg("param_mode") = 0, py::arg("aux") = py::none(), py::arg("tensor_id") = 0,
           py::arg("absmax") = std::vector<py::object>{})
      .def_readonly("param", &fastopt::EntrySpec::param)
      .def_readonly("numel", &fastopt::EntrySpec::numel)
      .def_readonly("group", &fastopt::EntrySpec::group);
  m.def(
      "engine_for",
      [](const std::string& device_type) -> py::object {
        const std::string e = fastopt::engine_for(device_type);
        return e.empty() ? py::object(py::none()) : py::object(py::str(e));
      },
      py::arg("device_type"),
      "The engine this module runs tensors of a device type on ('cpu', 'cuda', 'simt'), or None");

#if FASTOPT_WITH_CUDA || FASTOPT_SIMT
  m.def(
      "cuda_launch_limits", [] { return limits_dict(fastopt::cuda::launch_limits()); },
      "Limits of the CUDA engine's launch plans (0: default); they apply to plans built later");
  m.def(
      "set_cuda_launch_limits",
      [](int64_t max_tensors, int64_t max_blocks, int64_t chunk_elems) {
        const fastopt::cuda::LaunchLimits previous = fastopt::cuda::launch_limits();
        fastopt::cuda::set_launch_limits({max_tensors, max_blocks, chunk_elems});
        return limits_dict(previous);
      },
      py::arg("max_tensors") = 0, py::arg("max_blocks") = 0, py::arg("chunk_elems") = 0,
      "Set the launch limits (tests: small limits force multi-launch plans); returns the old ones");
  m.def(
      "cuda_variants",
      [] {
        const fastopt::cuda::Variants v = fastopt::cuda::variants();
        py::dict d;
        d["update_threads"] = v.update_threads;
        d["update_min_blocks"] = v.update_min_blocks;
        d["tiered"] = v.tiered;
        d["combine_segment"] = v.combine_segment;
        return d;
      },
      "The CUDA engine's launch variants for plans built from now on (0: the default)");
  m.def(
      "set_cuda_variants",
      [](int64_t update_threads, int64_t update_min_blocks, int64_t tiered,
         int64_t combine_segment) {
        const fastopt::cuda::Variants previous = fastopt::cuda::variants();
        fastopt::cuda::set_variants({update_threads, update_min_blocks, tiered, combine_segment});
        py::dict d;
        d["update_threads"] = previous.update_threads;
        d["update_min_blocks"] = previous.update_min_blocks;
        d["tiered"] = previous.tiered;
        d["combine_segment"] = previous.combine_segment;
        return d;
      },
      py::arg("update_threads") = 0, py::arg("update_min_blocks") = 0, py::arg("tiered") = 0,
      py::arg("combine_segment") = 0,
      "Set the launch variants (checked against the build); returns the old ones");
  m.def(
      "cuda_variants_built",
      [] {
        py::dict d;
        d["update_bounds"] = fastopt::cuda::update_bounds_built();
        d["table_tiers"] = fastopt::cuda::table_tiers_built();
        return d;
      },
      "The launch variants this build compiled: update (threads, min blocks); table tiers");
  m.def("cuda_driver_version", &fastopt::cuda::driver_version,
        "The CUDA version the NVIDIA driver supports (12040: 12.4); 0: no driver, or emulation");
  m.def("cuda_device_problem", &fastopt::cuda::device_problem, py::arg("driver"),
        py::arg("runtime"), py::arg("cc_major"), py::arg("cc_minor"), py::arg("archs"),
        "Why this build's CUDA engine cannot run on a device of that compute capability under "
        "that driver (versions as cudaDriverGetVersion gives them), or ''; checked when an "
        "engine is created");
#endif
#if FASTOPT_SIMT
  m.def("simt_hooks", &fastopt::cuda::set_simt_hooks, py::arg("skip") = std::vector<std::string>{},
        py::arg("skip_below") = 0, py::arg("fail") = std::vector<std::string>{},
        "Emulation test hooks, for kernels whose name contains one of the strings: blocks below "
        "skip_below of `skip` kernels are not run; launches of `fail` kernels fail");
  m.def("simt_selftest", &fastopt::simt_selftest, py::arg("kernel"), py::arg("grid"),
        py::arg("block"), py::arg("data"), py::arg("n"), py::arg("param") = 0,
        "Runs one of the emulation's self-test kernels (csrc/simt/selftest.cu) on data");
#endif

  // module_local: _C and _C_simt both bind fastopt::Plan and may be loaded together
  py::class_<Plan>(m, "Plan", py::module_local())
      .def(py::init<std::string, py::list, py::object, py::list, std::vector<int64_t>,
                    std::vector<int32_t>, std::vector<py::object>,
                    const std::vector<fastopt::EntrySpec>&, py::list, std::vector<int32_t>, int64_t,
                    py::object, bool, py::object>(),
           py::arg("kind"), py::arg("owner_groups"), py::arg("owner_state"), py::arg("params"),
           py::arg("entry_of_param"), py::arg("layouts"), py::arg("dense_strides"),
           py::arg("entries"), py::arg("held"), py::arg("sharded") = std::vector<int32_t>{},
           py::arg("chunk_elems") = 0, py::arg("device") = py::none(),
           py::arg("check_sizes") = true, py::arg("sources") = py::none(),
           "entries: an Entry per tensor; held: other tensors the entries point into; sharded: per "
           "param, 1 for a DTensor (read through its local shard); check_sizes=False "
           "(tests of index arithmetic with fabricated sizes only) skips the per-step size checks; "
           "sources: per param the tensor read in its grad's place (averaged models), else None")
      .def_static("check_hypers", &Plan::check_hypers, py::arg("kind"), py::arg("groups"),
                  py::arg("device") = py::none(),
                  "Reads the groups' hyperparameters as a plan would; raises ValueError naming "
                  "the group and key at fault")
      .def("refresh", &Plan::refresh)
      .def("set_grad", &Plan::set_grad, py::arg("entry"), py::arg("ptr"), py::arg("active") = true)
      .def(
          "run",
          [](Plan& plan, int num_threads, int64_t loss_scale, double max_norm,
             double rescale_max_norm, int norm_type, double norm_p, int64_t norm_out,
             int64_t found_inf, int64_t stream, int64_t total_out, int64_t total_in,
             int64_t tensor_out, int64_t tensor_in) {
            plan.run(num_threads,
                     pipeline(loss_scale, max_norm, rescale_max_norm, norm_type, norm_p, norm_out,
                              found_inf, total_out, total_in, tensor_out, tensor_in),
                     reinterpret_cast<void*>(stream));
          },
          py::arg("num_threads"), py::arg("loss_scale") = 0, py::arg("max_norm") = 0.0,
          py::arg("rescale_max_norm") = 0.0, py::arg("norm_type") = 0, py::arg("norm_p") = 2.0,
          py::arg("norm_out") = 0, py::arg("found_inf") = 0, py::arg("stream") = 0,
          py::arg("total_out") = 0, py::arg("total_in") = 0, py::arg("tensor_out") = 0,
          py::arg("tensor_in") = 0,
          "One step; the pipeline arguments are data pointers of float32 scalars (0: unused), "
          "stream a cudaStream_t (device engines). total_out / total_in (float64): the two "
          "phases of a norm reduced over processes; tensor_out / tensor_in (float64, "
          "tensor_sums_size of them): the two phases of the op's per-tensor reductions")
      .def(
          "launches",
          [](Plan& plan, int64_t loss_scale, double max_norm, double rescale_max_norm,
             int norm_type, double norm_p, int64_t norm_out, int64_t found_inf) {
            return launch_records(plan.launches(pipeline(loss_scale, max_norm, rescale_max_norm,
                                                         norm_type, norm_p, norm_out, found_inf)));
          },
          py::arg("loss_scale") = 0, py::arg("max_norm") = 0.0, py::arg("rescale_max_norm") = 0.0,
          py::arg("norm_type") = 0, py::arg("norm_p") = 2.0, py::arg("norm_out") = 0,
          py::arg("found_inf") = 0,
          "The kernel launches run() would make now, as dicts (device engines; [] for the CPU)")
      .def(
          "tensor_norms",
          [](Plan& plan, int which, int norm_type, double p, float scale, int num_threads,
             int64_t stream) {
            return plan.tensor_norms(which, norm_type, p, scale, num_threads,
                                     reinterpret_cast<void*>(stream));
          },
          py::arg("which"), py::arg("norm_type"), py::arg("p") = 2.0, py::arg("scale") = 1.0f,
          py::arg("num_threads") = 1, py::arg("stream") = 0)
      .def(
          "bind_workspace",
          [](Plan& plan, int64_t ptr, int64_t stream) {
            plan.bind_workspace(ptr, reinterpret_cast<void*>(stream));
          },
          py::arg("ptr"), py::arg("stream") = 0)
      .def("active_entries", &Plan::active_entries)
      .def_property_readonly("kind", &Plan::kind)
      .def_property_readonly("backend", &Plan::backend)
      .def_property_readonly("workspace_bytes", &Plan::workspace_bytes)
      .def_property_readonly("num_entries", &Plan::num_entries)
      .def_property_readonly("num_chunks", &Plan::num_chunks)
      .def_property_readonly("total_elems", &Plan::total_elems)
      .def_property_readonly("tensor_sums_size", &Plan::tensor_sums_size)
      .def_property_readonly("hyper_names", &Plan::hyper_names)
      .def_property_readonly("hyper_table", &Plan::hyper_table);
}
