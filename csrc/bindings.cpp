// The pybind11 module fastopt._C. It does not link libtorch: Python hands it tensors' data
// pointers, sizes and dtype codes (see fastopt/ops/plan.py).
#include <omp.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "plan.h"

namespace py = pybind11;
using fastopt::Plan;

#ifndef FASTOPT_VERSION
#define FASTOPT_VERSION "unknown"
#endif

namespace {

// Chunk size of the CPU engine, in elements: fixed, so results do not depend on thread count.
constexpr int64_t kCpuChunkElems = 1 << 16;

py::dict build_info() {
  py::dict d;
  d["version"] = FASTOPT_VERSION;
  d["backends"] = py::make_tuple("cpu");
  d["cpu_isa"] = fastopt::cpu_isa();
  d["cpu_isas_built"] = py::make_tuple("baseline", "avx2", "avx512");
  d["openmp"] = _OPENMP;
  d["omp_max_threads"] = omp_get_max_threads();
  d["compiler"] = __VERSION__;
  d["cpu_chunk_elems"] = kCpuChunkElems;
  return d;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastopt fused multi-tensor optimizer engine";
  m.attr("CPU_CHUNK_ELEMS") = kCpuChunkElems;
  m.def("build_info", &build_info, "What this build of fastopt._C contains");
  m.def("cpu_isa", &fastopt::cpu_isa, "The CPU code path in use (baseline, avx2, avx512)");
  m.def("hyper_keys", &fastopt::hyper_keys, py::arg("kind"),
        "Group keys an optimizer kind reads each step");

  py::class_<Plan>(m, "Plan")
      .def(py::init<std::string, py::list, py::object, py::list, std::vector<int64_t>,
                    std::vector<int32_t>, std::vector<py::object>, py::list, int64_t>(),
           py::arg("kind"), py::arg("owner_groups"), py::arg("owner_state"), py::arg("params"),
           py::arg("entry_of_param"), py::arg("layouts"), py::arg("dense_strides"),
           py::arg("entries"), py::arg("chunk_elems") = kCpuChunkElems)
      .def("refresh", &Plan::refresh)
      .def("set_grad", &Plan::set_grad, py::arg("entry"), py::arg("ptr"), py::arg("active") = true)
      .def(
          "run",
          [](Plan& plan, int num_threads, double op_scalar, int64_t loss_scale, double max_norm,
             int norm_type, double norm_p, int64_t norm_out, int64_t found_inf) {
            fastopt::GradPipeline pipe;
            pipe.loss_scale = reinterpret_cast<const float*>(loss_scale);
            pipe.max_norm = max_norm;
            pipe.norm_type = norm_type;
            pipe.norm_p = norm_p;
            pipe.norm_out = reinterpret_cast<float*>(norm_out);
            pipe.found_inf = reinterpret_cast<float*>(found_inf);
            plan.run(num_threads, op_scalar, pipe);
          },
          py::arg("num_threads"), py::arg("op_scalar") = 0.0, py::arg("loss_scale") = 0,
          py::arg("max_norm") = 0.0, py::arg("norm_type") = 0, py::arg("norm_p") = 2.0,
          py::arg("norm_out") = 0, py::arg("found_inf") = 0,
          "One step; the pipeline arguments are data pointers of float32 scalars (0: unused)")
      .def("tensor_norms", &Plan::tensor_norms, py::arg("which"), py::arg("norm_type"),
           py::arg("p") = 2.0, py::arg("scale") = 1.0f, py::arg("num_threads") = 1)
      .def("active_entries", &Plan::active_entries)
      .def_property_readonly("kind", &Plan::kind)
      .def_property_readonly("num_entries", &Plan::num_entries)
      .def_property_readonly("num_chunks", &Plan::num_chunks)
      .def_property_readonly("total_elems", &Plan::total_elems)
      .def_property_readonly("hyper_names", &Plan::hyper_names)
      .def_property_readonly("hyper_table", &Plan::hyper_table);
}
