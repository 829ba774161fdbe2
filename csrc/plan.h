// A cached launch table for one optimizer, and its cheap per-step refresh.
//
// Python builds the table (states, pointers, dtypes) on the slow path. Every step, refresh()
// re-reads what may change between steps without touching Python bytecode: each param's .grad
// (pointer, dtype, layout), each group's hyperparameters, and whether anything structural
// changed (param_groups or state replaced, a param moved, a new param got a grad, amsgrad or
// momentum switched on) — in which case Python rebuilds the table.
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/table.h"
#include "cpu/api.h"

namespace fastopt {

namespace py = pybind11;

// One hyperparameter read from each group dict: "key", "key.N" (N-th item), a trailing '?'
// (optional, 0 when absent) and/or '!' (structural: a change of truthiness forces a rebuild).
struct HyperKey {
  py::str key;
  std::string name;
  int index = -1;
  bool optional = false;
  bool structural = false;
};

enum class Layout : int32_t {
  contiguous = 0,  // grad must be contiguous
  dense = 1,       // non-contiguous but dense: grad must have the param's strides
  staged = 2,      // neither: Python copies param and grad through contiguous buffers
};

enum class Refresh : int32_t { ok = 0, rebuild = 1 };

class Plan {
 public:
  Plan(std::string kind, py::list owner_groups, py::object owner_state, py::list params,
       std::vector<int64_t> entry_of_param, std::vector<int32_t> layouts,
       std::vector<py::object> dense_strides, py::list entries, int64_t chunk_elems);

  // Re-reads grads and hyperparameters. Returns (status, reason, fixups): fixups are entries
  // whose grad Python must supply with set_grad (staged params, or grads of another layout).
  py::tuple refresh();
  void set_grad(int64_t entry, int64_t ptr, bool active);
  // One optimizer step over every entry with a grad, through the gradient pipeline: with a
  // loss scale the grads are unscaled; the total norm is reduced when clipping or reporting;
  // with found_inf set a non-finite grad turns the step into a no-op.
  void run(int num_threads, double op_scalar, const GradPipeline& pipe);
  // Per-tensor norm measures (folded, see NormMeasure) of params (which=0) or grads (which=1).
  std::vector<double> tensor_norms(int which, int norm_type, double p, float scale,
                                   int num_threads);

  const std::string& kind() const { return kind_; }
  int64_t num_entries() const { return int64_t(entries_.size()); }
  int64_t num_chunks() const { return int64_t(chunks_.size()); }
  int64_t total_elems() const { return total_elems_; }
  std::vector<std::string> hyper_names() const;
  std::vector<double> hyper_table() const { return hyper_; }
  std::vector<int64_t> active_entries() const;

 private:
  StepCall call(int num_threads, StepScalars scalars) const;
  bool read_hypers(std::string* reason);

  std::string kind_;
  void (*step_)(const StepCall&) = nullptr;
  std::vector<HyperKey> keys_;
  py::list owner_groups_;
  py::object owner_state_;
  std::vector<py::object> groups_;       // group dicts, identity-checked
  std::vector<py::object> group_lists_;  // each group's 'params' list
  std::vector<Py_ssize_t> group_sizes_;
  py::list params_;
  std::vector<int64_t> param_data_;  // data_ptr() at build time
  std::vector<py::object> grad_dtype_;  // per entry: the dtype its grads must have
  std::vector<int64_t> entry_of_param_;
  std::vector<int32_t> layouts_;
  std::vector<py::object> dense_strides_;
  std::vector<TensorEntry> entries_;
  std::vector<Chunk> chunks_;
  std::vector<double> hyper_;         // [groups][keys]
  std::vector<double> structural_;    // truthiness of structural keys at build time
  int64_t total_elems_ = 0;
  CpuKernels kernels_;
};

// The kernels of the best instruction set this CPU supports (FASTOPT_CPU_ISA overrides).
const CpuKernels& cpu_kernels();
const char* cpu_isa();
std::vector<std::string> hyper_keys(const std::string& kind);

}  // namespace fastopt
