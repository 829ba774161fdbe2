// The pybind11 module fastopt._C, and fastopt._C_simt when compiled with FASTOPT_SIMT (the same
// API; cpu tensors run through the CUDA engine under the host emulation). Neither links libtorch:
// Python hands them tensors' data pointers, sizes and dtype codes (see fastopt/ops/plan.py).
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

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

// Chunk size of the CPU engine, in elements (see cpu/cpu_engine.cpp).
constexpr int64_t kCpuChunkElems = 1 << 16;

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
  d["cpu_isas_built"] = py::make_tuple("baseline", "avx2", "avx512");
  d["openmp"] = _OPENMP;
  d["omp_max_threads"] = omp_get_max_threads();
  d["compiler"] = __VERSION__;
  d["cpu_chunk_elems"] = kCpuChunkElems;
#if FASTOPT_WITH_CUDA
  const int v = fastopt::cuda::runtime_version();
  d["cuda_runtime"] = std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10) + " (static)";
  d["cuda_archs"] = FASTOPT_CUDA_ARCHS;
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

fastopt::GradPipeline pipeline(int64_t loss_scale, double max_norm, int norm_type, double norm_p,
                               int64_t norm_out, int64_t found_inf, int64_t total_out = 0,
                               int64_t total_in = 0) {
  fastopt::GradPipeline pipe;
  pipe.loss_scale = reinterpret_cast<const float*>(loss_scale);
  pipe.max_norm = max_norm;
  pipe.norm_type = norm_type;
  pipe.norm_p = norm_p;
  pipe.norm_out = reinterpret_cast<float*>(norm_out);
  pipe.found_inf = reinterpret_cast<float*>(found_inf);
  pipe.total_out = reinterpret_cast<double*>(total_out);
  pipe.total_in = reinterpret_cast<const double*>(total_in);
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
  m.def("cpu_isa", &fastopt::cpu_isa, "The CPU code path in use (baseline, avx2, avx512)");
  m.def("hyper_keys", &fastopt::hyper_keys, py::arg("kind"),
        "Group keys an optimizer kind reads each step");
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
                    std::vector<int32_t>, std::vector<py::object>, py::list, py::list,
                    std::vector<int32_t>, int64_t, py::object, bool>(),
           py::arg("kind"), py::arg("owner_groups"), py::arg("owner_state"), py::arg("params"),
           py::arg("entry_of_param"), py::arg("layouts"), py::arg("dense_strides"),
           py::arg("entries"), py::arg("held"), py::arg("sharded") = std::vector<int32_t>{},
           py::arg("chunk_elems") = 0,
           py::arg("device") = py::none(), py::arg("check_sizes") = true,
           "entries: per tensor (param ptr, 3 state tensors or None, numel, dtype codes, group, "
           "step ptr, fresh, grad dtype); held: other tensors the entries point into; sharded: per "
           "param, 1 for a DTensor (read through its local shard); check_sizes=False "
           "(tests of index arithmetic with fabricated sizes only) skips the per-step size checks")
      .def_static("check_hypers", &Plan::check_hypers, py::arg("kind"), py::arg("groups"),
                  py::arg("device") = py::none(),
                  "Reads the groups' hyperparameters as a plan would; raises ValueError naming "
                  "the group and key at fault")
      .def("refresh", &Plan::refresh)
      .def("set_grad", &Plan::set_grad, py::arg("entry"), py::arg("ptr"), py::arg("active") = true)
      .def(
          "run",
          [](Plan& plan, int num_threads, double op_scalar, int64_t loss_scale, double max_norm,
             int norm_type, double norm_p, int64_t norm_out, int64_t found_inf, int64_t stream,
             int64_t total_out, int64_t total_in) {
            plan.run(num_threads, op_scalar,
                     pipeline(loss_scale, max_norm, norm_type, norm_p, norm_out, found_inf,
                              total_out, total_in),
                     reinterpret_cast<void*>(stream));
          },
          py::arg("num_threads"), py::arg("op_scalar") = 0.0, py::arg("loss_scale") = 0,
          py::arg("max_norm") = 0.0, py::arg("norm_type") = 0, py::arg("norm_p") = 2.0,
          py::arg("norm_out") = 0, py::arg("found_inf") = 0, py::arg("stream") = 0,
          py::arg("total_out") = 0, py::arg("total_in") = 0,
          "One step; the pipeline arguments are data pointers of float32 scalars (0: unused), "
          "stream a cudaStream_t (device engines). total_out / total_in (float64): the two "
          "phases of a norm reduced over processes")
      .def(
          "launches",
          [](Plan& plan, double op_scalar, int64_t loss_scale, double max_norm, int norm_type,
             double norm_p, int64_t norm_out, int64_t found_inf) {
            return launch_records(plan.launches(
                op_scalar, pipeline(loss_scale, max_norm, norm_type, norm_p, norm_out, found_inf)));
          },
          py::arg("op_scalar") = 0.0, py::arg("loss_scale") = 0, py::arg("max_norm") = 0.0,
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
      .def_property_readonly("hyper_names", &Plan::hyper_names)
      .def_property_readonly("hyper_table", &Plan::hyper_table);
}
