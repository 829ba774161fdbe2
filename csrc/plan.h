// A cached launch table for one optimizer, and its cheap per-step refresh.
//
// Python builds the table (states, pointers, dtypes) on the slow path. Every step, refresh()
// re-reads what may change between steps without touching Python bytecode: each param's .grad
// (pointer, dtype, layout, size), each group's hyperparameters, and whether anything structural
// changed (param_groups or state replaced, a param moved or changed size, a new param got a
// grad, amsgrad or momentum switched on, optimizer.state edited, a state tensor moved or
// changed size) — in which case Python rebuilds the table.
//
// Memory safety: the plan holds a reference to every tensor it has a raw pointer to (params,
// state tensors, the step buffer, staged copies) and re-checks every pointer and element count
// it will use before each step, so no edit through the public API between two steps can make
// the engine touch freed memory or run past a tensor's end.
//
// The steps run on the Engine of the params' device (engine.h): the CPU engine, or the CUDA
// engine, which fastopt._C_simt runs on cpu tensors under the host emulation.
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <string>
#include <vector>

#include "core/table.h"
#include "engine.h"

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

// One tensor of the table as Python describes it (fastopt/ops/plan.py builds these by keyword;
// the field names are the record's documentation).
struct EntrySpec {
  int64_t param = 0;  // the address the engine updates (the param, or its staged copy)
  // kMaxStates items in the op's state order: state tensors, or None (an int is a raw address,
  // unchecked: only for tests of the engine's index arithmetic)
  std::vector<py::object> states;
  int64_t numel = 0;
  int32_t param_dtype = 0, grad_dtype = 0, state_dtype = 0;  // DType codes
  int32_t group = 0;                                         // its param group
  // its float32 step count (ops with kHasStep): a one-element tensor, held and re-checked each
  // step like the states; None (no count); or an int, a raw address as in states
  py::object step = py::none();
  int32_t fresh = 0;  // its fresh state is new: the first update initialises it from the grad
  py::object expected_grad_dtype;  // the torch.dtype its grads must have
  // precision.h: its ParamMode, the mode's buffer (a tensor of the param's size, or None) and
  // its index among the optimizer's params (its rounding key)
  int32_t param_mode = 0;
  py::object aux = py::none();
  int64_t tensor_id = 0;
  // state_dtype q8 (8-bit states, core/quant8.h): per state, its float32 absmax tensor of
  // ceil(numel / kQuantBlock) elements (the states are then uint8 codes); else empty
  std::vector<py::object> absmax;
};

class Plan {
 public:
  // device: the params' torch.device (None: cpu); it selects the engine (see make_engine).
  // chunk_elems 0: the engine's default chunk size. sources: None (each param's .grad is read
  // in the grad slot), or a list with one tensor per param read there instead, every step
  // (averaged models: the source model's tensors; held, and re-checked like grads).
  Plan(std::string kind, py::list owner_groups, py::object owner_state, py::list params,
       std::vector<int64_t> entry_of_param, std::vector<int32_t> layouts,
       std::vector<py::object> dense_strides, const std::vector<EntrySpec>& entries, py::list held,
       std::vector<int32_t> sharded, int64_t chunk_elems, py::object device, bool check_sizes,
       py::object sources);

  // Re-reads grads and hyperparameters. Returns (status, reason, fixups): fixups are entries
  // whose grad Python must supply with set_grad (staged params, or grads of another layout).
  py::tuple refresh();
  // Groups' hyperparameters as the plan reads them; raises naming the group and key at fault.
  // Python validates with it before it creates any state.
  static void check_hypers(const std::string& kind, py::list groups, py::object device);
  void set_grad(int64_t entry, int64_t ptr, bool active);
  // One optimizer step over every entry with a grad, through the gradient pipeline: with a
  // loss scale the grads are unscaled; the total norm is reduced when clipping or reporting;
  // with found_inf set a non-finite grad turns the step into a no-op.
  // stream: the cudaStream_t a device engine launches on (ignored by the CPU engine).
  void run(int num_threads, const GradPipeline& pipe, void* stream);
  // Per-tensor norm measures (folded, see NormMeasure) of params (which=0) or grads (which=1).
  // A device engine waits for the result (a host synchronisation: for diagnostics, not steps).
  std::vector<double> tensor_norms(int which, int norm_type, double p, float scale, int num_threads,
                                   void* stream);
  // The kernel launches run() would make now (device engines; empty for the CPU engine).
  std::vector<LaunchRecord> launches(const GradPipeline& pipe);
  // Device engines: scratch memory on the params' device, allocated by the caller once per plan.
  int64_t workspace_bytes() const { return engine_->workspace_bytes(); }
  void bind_workspace(int64_t ptr, void* stream);

  const std::string& kind() const { return kind_; }
  const char* backend() const { return engine_->backend(); }
  int64_t num_entries() const { return int64_t(entries_.size()); }
  int64_t num_chunks() const { return engine_->num_chunks(); }
  int64_t total_elems() const { return total_elems_; }
  // The doubles of GradPipeline::tensor_out / tensor_in: kNumReductions per param, by tensor_id.
  int64_t tensor_sums_size() const { return int64_t(py::len(params_)) * kNumReductions; }
  std::vector<std::string> hyper_names() const;
  std::vector<double> hyper_table() const { return hyper_; }
  std::vector<int64_t> active_entries() const;

 private:
  // The groups, their hyperparameter keys and the device: what check_hypers needs.
  Plan(std::string kind, py::list owner_groups, py::object device);
  StepInputs inputs(int num_threads, void* stream);
  bool read_hypers(std::string* reason);
  bool read_device_lr(size_t group, PyObject* value, std::string* reason);
  void snapshot_state();
  bool state_unchanged() const;

  std::string kind_;
  py::object device_;
  bool device_engine_ = false;  // the engine runs on the params' device (not the host)
  bool check_sizes_ = true;     // false only in tests that fabricate sizes (index arithmetic)
  int lr_key_ = -1;             // index of the "lr" key
  std::vector<HyperKey> keys_;
  py::list owner_groups_;
  py::object owner_state_;
  std::vector<py::object> groups_;       // group dicts, identity-checked
  std::vector<py::object> group_lists_;  // each group's 'params' list
  std::vector<Py_ssize_t> group_sizes_;
  py::list params_;
  py::object sources_;  // None, or per param the tensor read in place of its .grad
  int read_path_ = 0;   // how this plan reads tensors (plan.cpp, ReadPath): codes are its own
  // per param at build time: its data pointer, dtype and device (codes of the read path)
  std::vector<int64_t> param_data_, param_dtype_, param_device_;
  std::vector<int64_t> grad_dtype_;    // per entry: the dtype its grads must have (a code)
  std::vector<py::object> grad_type_;  // per entry: the Python type its grads were validated as
  std::vector<int64_t> entry_of_param_;
  std::vector<int32_t> layouts_;
  // per param: a DTensor (FSDP2), read through its local shard (._local_tensor), grad likewise
  std::vector<int32_t> sharded_;
  py::object tensor_type_;  // torch.Tensor: the type a local shard must have
  std::vector<std::vector<int64_t>> dense_strides_;  // per param: its strides if dense, else {}
  std::vector<TensorEntry> entries_;
  // [entries][kSlots]: the tensors an entry points into, each held and re-checked every step
  // (or None): its kMaxStates states, their absmax (8-bit states), the precision buffer and the
  // step count
  static constexpr int kAuxSlot = 2 * kMaxStates, kStepSlot = kAuxSlot + 1;
  static constexpr int kSlots = kStepSlot + 1;
  // the address entry e holds for slot k, and the elements that slot's tensor has
  static const void* slot_address(const TensorEntry& e, int k);
  static int64_t slot_numel(const TensorEntry& e, int k);
  std::vector<py::object> entry_states_;
  std::vector<int64_t> state_dtype_;     // their dtypes' codes (-1: no tensor)
  std::vector<py::object> state_items_;  // optimizer.state's items and their dicts' items
  py::list held_;                        // other tensors the entries point into
  std::vector<double> hyper_;            // [groups][keys]
  std::vector<const float*> lr_device_;  // per group: device scalar lr (tensor lr), or nullptr
  std::vector<double> structural_;       // truthiness of structural keys at build time
  int64_t total_elems_ = 0;
  std::unique_ptr<Engine> engine_;
};

std::vector<std::string> hyper_keys(const std::string& kind);
// How plans read tensors each step ("shim", "accessors" or "methods"; plan.cpp, ReadPath):
// path "" only asks; a name switches to it (for tests and benchmarks of every path) or throws
// where it cannot be used. Returns the path in use.
std::string tensor_reads(const std::string& path);
// Why the shim path cannot be used here ("" when it can).
std::string tensor_reads_unavailable();
// The engine this module runs a device type's tensors on ("cpu", "cuda", "simt"), or "".
std::string engine_for(const std::string& device_type);

}  // namespace fastopt
