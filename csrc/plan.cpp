#include "plan.h"

#include <dlfcn.h>
#include <pybind11/eval.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <type_traits>

#include "core/ops.h"
#include "core/quant8.h"

namespace fastopt {

namespace {

// Interned attribute names, created once.
struct Names {
  PyObject* grad = PyUnicode_InternFromString("grad");
  PyObject* params = PyUnicode_InternFromString("params");
  PyObject* data_ptr = PyUnicode_InternFromString("data_ptr");
  PyObject* dtype = PyUnicode_InternFromString("dtype");
  PyObject* is_contiguous = PyUnicode_InternFromString("is_contiguous");
  PyObject* stride = PyUnicode_InternFromString("stride");
  PyObject* numel = PyUnicode_InternFromString("numel");
  PyObject* local = PyUnicode_InternFromString("_local_tensor");
  PyObject* device = PyUnicode_InternFromString("device");
};
const Names& names() {
  static const Names n;
  return n;
}

// How the per-step refresh reads a tensor (ptr, size, dtype, device, layout), fastest first:
//  shim: torch's stable C shim, the `aoti_torch_*` functions AOTInductor's generated code calls
//    (exported by libtorch_cpu with a C ABI, resolved at run time: _C does not link libtorch).
//    They take an at::Tensor*, which a tensor object holds at a fixed offset (THPVariable::cdata,
//    what torch's own THPVariable_Unpack reads); the offset is found and every read checked
//    against torch's Python accessors on probe tensors at first use, else this path is off.
//    A few ns per read: no Python call, no int object.
//  accessors: torch's C getters and methods of torch._C.TensorBase, called directly (~30 ns),
//    and the C function inductor publishes for data pointers.
//  methods: the same without that function (Tensor.data_ptr()).
// The reads of one plan use one path: codes of dtypes and devices are the path's own.
enum class ReadPath : int { shim = 0, accessors = 1, methods = 2 };
constexpr const char* kReadPathNames[] = {"shim", "accessors", "methods"};

// What the refresh reads of a tensor. dtype and device are codes of the path that read them.
struct TensorMeta {
  int64_t ptr = 0, numel = 0, dtype = -1, device = -1;
  int64_t dim = -1;  // shim: sizes and strides (borrowed from the tensor), else dim -1
  const int64_t* sizes = nullptr;
  const int64_t* strides = nullptr;
};
enum : unsigned { kPtr = 1, kNumel = 2, kDtype = 4, kDevice = 8, kShape = 16 };

// The C shim's functions the refresh calls (torch/csrc/inductor/aoti_torch/c/shim.h): each
// returns 0 on success; a C++ exception (a tensor without storage, say) becomes an error code.
struct Shim {
  using Handle = void*;  // AtenTensorHandle
  int32_t (*data_ptr)(Handle, void**) = nullptr;
  int32_t (*numel)(Handle, int64_t*) = nullptr;
  int32_t (*dtype)(Handle, int32_t*) = nullptr;
  int32_t (*device_type)(Handle, int32_t*) = nullptr;
  int32_t (*device_index)(Handle, int32_t*) = nullptr;
  int32_t (*dim)(Handle, int64_t*) = nullptr;
  int32_t (*sizes)(Handle, int64_t**) = nullptr;
  int32_t (*strides)(Handle, int64_t**) = nullptr;
  int32_t (*release)(Handle) = nullptr;  // aoti_torch_delete_tensor_object: probes only
  Py_ssize_t cdata = -1;                 // offset of the at::Tensor in a tensor object
  PyTypeObject* base = nullptr;          // torch._C.TensorBase: every tensor object's layout

  PyTypeObject* exact[2] = {};  // torch.Tensor, nn.Parameter: checked first (no MRO walk)

  Handle handle(PyObject* t) const {
    PyTypeObject* type = Py_TYPE(t);
    const bool tensor = type == exact[0] || type == exact[1] || PyType_IsSubtype(type, base);
    return tensor ? reinterpret_cast<char*>(t) + cdata : nullptr;
  }
  bool read(PyObject* t, unsigned what, TensorMeta* m) const {
    Handle h = handle(t);
    if (h == nullptr) return false;
    void* ptr = nullptr;
    int32_t dt = 0, type = 0, index = 0;
    int64_t* sz = nullptr;
    int64_t* st = nullptr;
    if ((what & kPtr) && data_ptr(h, &ptr) != 0) return false;
    if ((what & kNumel) && numel(h, &m->numel) != 0) return false;
    if ((what & kDtype) && dtype(h, &dt) != 0) return false;
    if ((what & kDevice) && (device_type(h, &type) != 0 || device_index(h, &index) != 0))
      return false;
    if ((what & kShape) && (dim(h, &m->dim) != 0 || sizes(h, &sz) != 0 || strides(h, &st) != 0))
      return false;
    m->ptr = reinterpret_cast<int64_t>(ptr);
    m->dtype = dt;
    m->device = (int64_t(type) << 32) | uint32_t(index);
    m->sizes = sz;
    m->strides = st;
    return true;
  }
};

// torch's definition (TensorImpl::compute_contiguous): an empty tensor is contiguous, else the
// strides of the dims longer than 1 are those of a row-major layout
bool contiguous_layout(const TensorMeta& m) {
  for (int64_t d = 0; d < m.dim; ++d)
    if (m.sizes[d] == 0) return true;
  int64_t expected = 1;
  for (int64_t d = m.dim - 1; d >= 0; --d) {
    if (m.sizes[d] == 1) continue;
    if (m.strides[d] != expected) return false;
    expected *= m.sizes[d];
  }
  return true;
}

// torch's own C implementations of Tensor.grad / .dtype / .data_ptr() / .is_contiguous() /
// .numel(), resolved once from torch._C.TensorBase and called directly: most of the cost of a
// Python-level call is the lookup and call machinery around them. A tensor type that overrides
// any of them (a subclass) goes through the normal lookup instead. And the C shim.
struct TensorAccess {
  getter grad_get = nullptr;
  void* grad_closure = nullptr;
  getter dtype_get = nullptr;
  void* dtype_closure = nullptr;
  PyCFunction data_ptr = nullptr;
  PyCFunctionWithKeywords is_contiguous = nullptr;
  PyMethodDef* numel = nullptr;  // called by its flags (METH_NOARGS or VARARGS|KEYWORDS)
  static constexpr int kNames = 5;
  PyObject* descr[kNames] = {};  // grad, dtype, data_ptr, is_contiguous, numel of TensorBase
  PyObject* empty = PyTuple_New(0);
  PyTypeObject* plain[8] = {};  // types checked to use TensorBase's accessors
  // torch publishes, for the C++ modules inductor generates (which do not link libtorch either),
  // the address of a plain C function returning a tensor's data pointer:
  // torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr, `void* (*)(PyObject*)`.
  // Used on the accessors path for torch.Tensor and nn.Parameter objects (the types it is
  // written for).
  using DataPtrFn = void* (*)(PyObject*);
  DataPtrFn data_ptr_fn = nullptr;
  PyTypeObject* exact[2] = {};  // torch.Tensor, torch.nn.Parameter

  Shim shim;
  std::string shim_unavailable;  // why the shim path is off ("" when it can be used)
  ReadPath path = ReadPath::methods;
  // dtype codes: the shim's (c10::ScalarType) for dtype objects, found on an empty tensor
  std::vector<std::pair<PyObject*, int64_t>> shim_dtypes;
  std::vector<py::object> devices;  // accessors paths: the devices met, a device's code its index

  void resolve_data_ptr_fn() {
    try {
      py::module_ torch = py::module_::import("torch");
      exact[0] = reinterpret_cast<PyTypeObject*>(torch.attr("Tensor").ptr());
      exact[1] = reinterpret_cast<PyTypeObject*>(torch.attr("nn").attr("Parameter").ptr());
      py::object guards = py::module_::import("torch._C._dynamo.guards");
      py::object addr = guards.attr("_torchinductor_pyobject_tensor_data_ptr");
      if (!PyLong_Check(addr.ptr())) return;
      data_ptr_fn = reinterpret_cast<DataPtrFn>(PyLong_AsVoidPtr(addr.ptr()));
      if (PyErr_Occurred()) {
        PyErr_Clear();
        data_ptr_fn = nullptr;
      }
      // a private interface: used only while it answers what data_ptr() answers on a probe
      if (data_ptr_fn != nullptr) {
        py::object probe = torch.attr("empty")(3);
        const auto expected = probe.attr("data_ptr")().cast<int64_t>();
        if (reinterpret_cast<int64_t>(data_ptr_fn(probe.ptr())) != expected) data_ptr_fn = nullptr;
      }
    } catch (const std::exception&) {
      PyErr_Clear();
      data_ptr_fn = nullptr;
    }
  }

  // The shim's functions, the offset of at::Tensor in a tensor object, and every read checked
  // on probes; "" when all holds, else what did not.
  std::string resolve_shim() {
    if (const char* env = std::getenv("FASTOPT_TENSOR_READS"); env && std::strcmp(env, "shim"))
      return std::string("FASTOPT_TENSOR_READS=") + env;
    py::module_ torch = py::module_::import("torch");
    const std::string lib_dir =
        py::module_::import("os.path").attr("dirname")(torch.attr("__file__")).cast<std::string>() +
        "/lib/";
    void* lib = nullptr;
    for (const char* name : {"libtorch_cpu.so", "libtorch_cpu.dylib"})
      if ((lib = dlopen((lib_dir + name).c_str(), RTLD_LAZY | RTLD_NOLOAD)) != nullptr) break;
    if (lib == nullptr) return "libtorch_cpu is not loaded from " + lib_dir;
    auto sym = [&](auto& fn, const char* name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(dlsym(lib, name));
      return fn != nullptr;
    };
    Shim s;
    if (!sym(s.data_ptr, "aoti_torch_get_data_ptr") || !sym(s.numel, "aoti_torch_get_numel") ||
        !sym(s.dtype, "aoti_torch_get_dtype") ||
        !sym(s.device_type, "aoti_torch_get_device_type") ||
        !sym(s.device_index, "aoti_torch_get_device_index") || !sym(s.dim, "aoti_torch_get_dim") ||
        !sym(s.sizes, "aoti_torch_get_sizes") || !sym(s.strides, "aoti_torch_get_strides") ||
        !sym(s.release, "aoti_torch_delete_tensor_object"))
      return "libtorch_cpu lacks a function of the C shim";
    s.base = reinterpret_cast<PyTypeObject*>(torch.attr("_C").attr("TensorBase").ptr());
    s.exact[0] = reinterpret_cast<PyTypeObject*>(torch.attr("Tensor").ptr());
    s.exact[1] = reinterpret_cast<PyTypeObject*>(torch.attr("nn").attr("Parameter").ptr());
    py::object to_handle = torch.attr("_C").attr("_aoti").attr("unsafe_alloc_void_ptr_from_tensor");
    // probes of each kind the refresh meets: Parameter, plain and subclass tensors, views at an
    // offset, non-contiguous, empty (one with strides no layout has), 16-bit, sizes of 1
    py::dict scope;
    scope["torch"] = torch;
    py::exec(R"(
class _Probe(torch.Tensor):
    pass
base = torch.arange(24.0)
probes = [torch.nn.Parameter(torch.ones(3, 4)), base, base[5:17].view(3, 4), base.view(4, 6).t(),
          torch.empty(0), torch.empty(2, 0, 3), torch.ones(1, 5, 1, dtype=torch.bfloat16),
          torch.ones(7, dtype=torch.float16).as_subclass(_Probe), base.view(2, 3, 4)[:, ::2, 1:],
          torch.zeros((), dtype=torch.int64), torch.empty(0).as_strided((0, 3), (1, 5)),
          torch.empty(4, 1, 6)[:, :, ::2]]
)",
             scope);
    py::list probes = scope["probes"];
    for (py::handle t : probes) {
      if (Py_TYPE(t.ptr())->tp_basicsize < s.base->tp_basicsize) return "a tensor type is small";
      // a new at::Tensor on the heap, as a capsule without a destructor (or an int)
      py::object h = to_handle(t);
      void* owned = PyCapsule_CheckExact(h.ptr()) ? PyCapsule_GetPointer(h.ptr(), nullptr)
                                                  : PyLong_AsVoidPtr(h.ptr());
      if (owned == nullptr) throw py::error_already_set();
      void* impl = *static_cast<void**>(owned);  // the TensorImpl the owned at::Tensor holds
      Py_ssize_t found = -1;
      for (Py_ssize_t off = sizeof(PyObject);
           off + Py_ssize_t(sizeof(void*)) <= s.base->tp_basicsize; off += sizeof(void*)) {
        void* at;
        std::memcpy(&at, reinterpret_cast<char*>(t.ptr()) + off, sizeof at);
        if (at == impl) found = found < 0 ? off : -2;
      }
      s.release(owned);
      if (found < 0 || (s.cdata >= 0 && found != s.cdata))
        return "no single offset of at::Tensor in tensor objects";
      s.cdata = found;
    }
    int64_t cpu = -1;
    for (py::handle t : probes) {
      TensorMeta m;
      if (!s.read(t.ptr(), kPtr | kNumel | kDtype | kDevice | kShape, &m))
        return "a read of the shim failed on a probe";
      py::tuple shape = py::tuple(t.attr("shape")), stride = t.attr("stride")();
      bool same = m.ptr == t.attr("data_ptr")().cast<int64_t>() &&
                  m.numel == t.attr("numel")().cast<int64_t>() &&
                  m.dim == int64_t(py::len(shape)) &&
                  contiguous_layout(m) == t.attr("is_contiguous")().cast<bool>() &&
                  (cpu < 0 || m.device == cpu);
      for (int64_t d = 0; same && d < m.dim; ++d)
        same = m.sizes[d] == shape[d].cast<int64_t>() && m.strides[d] == stride[d].cast<int64_t>();
      if (!same) return "a read of the shim differs from torch's accessors on a probe";
      cpu = m.device;
      for (py::handle u : probes) {  // dtype codes: equal exactly for equal dtypes
        TensorMeta o;
        if (!s.read(u.ptr(), kDtype, &o) ||
            (o.dtype == m.dtype) != t.attr("dtype").equal(u.attr("dtype")))
          return "the shim's dtype codes do not follow torch's dtypes";
      }
    }
    shim = s;
    return "";
  }

  bool resolve(PyObject* base) {
    const Names& n = names();
    PyObject* names_[kNames] = {n.grad, n.dtype, n.data_ptr, n.is_contiguous, n.numel};
    for (int i = 0; i < kNames; ++i) {
      PyObject* d =
          PyDict_GetItemWithError(reinterpret_cast<PyTypeObject*>(base)->tp_dict, names_[i]);
      if (d == nullptr) return false;
      descr[i] = d;
    }
    if (!PyObject_TypeCheck(descr[0], &PyGetSetDescr_Type) ||
        !PyObject_TypeCheck(descr[1], &PyGetSetDescr_Type) ||
        !PyObject_TypeCheck(descr[2], &PyMethodDescr_Type) ||
        !PyObject_TypeCheck(descr[3], &PyMethodDescr_Type) ||
        !PyObject_TypeCheck(descr[4], &PyMethodDescr_Type))
      return false;
    auto* g = reinterpret_cast<PyGetSetDescrObject*>(descr[0]);
    auto* t = reinterpret_cast<PyGetSetDescrObject*>(descr[1]);
    auto* dp = reinterpret_cast<PyMethodDescrObject*>(descr[2]);
    auto* ic = reinterpret_cast<PyMethodDescrObject*>(descr[3]);
    if ((dp->d_method->ml_flags & METH_NOARGS) == 0) return false;
    if ((ic->d_method->ml_flags & (METH_VARARGS | METH_KEYWORDS)) != (METH_VARARGS | METH_KEYWORDS))
      return false;
    numel = reinterpret_cast<PyMethodDescrObject*>(descr[4])->d_method;
    const int numel_flags = numel->ml_flags & (METH_NOARGS | METH_VARARGS | METH_KEYWORDS);
    if (numel_flags != METH_NOARGS && numel_flags != (METH_VARARGS | METH_KEYWORDS)) return false;
    grad_get = g->d_getset->get;
    grad_closure = g->d_getset->closure;
    dtype_get = t->d_getset->get;
    dtype_closure = t->d_getset->closure;
    data_ptr = dp->d_method->ml_meth;
    is_contiguous = reinterpret_cast<PyCFunctionWithKeywords>(
        reinterpret_cast<void (*)(void)>(ic->d_method->ml_meth));
    return true;
  }

  // Does this type resolve all the names to TensorBase's descriptors?
  bool is_plain(PyTypeObject* type) {
    for (PyTypeObject* t : plain)
      if (t == type) return true;
    const Names& n = names();
    PyObject* names_[kNames] = {n.grad, n.dtype, n.data_ptr, n.is_contiguous, n.numel};
    for (int i = 0; i < kNames; ++i)
      if (_PyType_Lookup(type, names_[i]) != descr[i]) return false;
    for (PyTypeObject*& t : plain)
      if (t == nullptr) {
        t = type;
        break;
      }
    return true;
  }

  // The code of a torch.dtype on the path in use: the shim's, or the (immortal) object's address.
  bool dtype_code(PyObject* dtype, int64_t* out) {
    if (path != ReadPath::shim) {
      *out = reinterpret_cast<int64_t>(dtype);
      return true;
    }
    for (const auto& [obj, code] : shim_dtypes)
      if (obj == dtype) {
        *out = code;
        return true;
      }
    py::object probe = py::module_::import("torch").attr("empty")(
        0, py::arg("dtype") = py::reinterpret_borrow<py::object>(dtype));
    TensorMeta m;
    if (!shim.read(probe.ptr(), kDtype, &m)) return false;
    shim_dtypes.emplace_back(dtype, m.dtype);  // dtypes are immortal: the key stays valid
    *out = m.dtype;
    return true;
  }

  // The code of a torch.device object on the accessors paths: the index of an equal device
  // among those met (torch.device compares by type and index).
  bool device_code(PyObject* device, int64_t* out) {
    for (size_t i = 0; i < devices.size(); ++i) {
      const int same = PyObject_RichCompareBool(device, devices[i].ptr(), Py_EQ);
      if (same < 0) return false;
      if (same) {
        *out = int64_t(i);
        return true;
      }
    }
    devices.push_back(py::reinterpret_borrow<py::object>(device));
    *out = int64_t(devices.size() - 1);
    return true;
  }
};

TensorAccess* access() {
  static TensorAccess* a = [] {
    auto* acc = new TensorAccess();
    py::object base = py::module_::import("torch").attr("_C").attr("TensorBase");
    if (!acc->resolve(base.ptr())) {
      PyErr_Clear();
      acc->grad_get = nullptr;  // fall back to the generic protocol everywhere
    }
    acc->resolve_data_ptr_fn();
    try {
      acc->shim_unavailable = acc->resolve_shim();
    } catch (const std::exception& e) {
      PyErr_Clear();
      acc->shim_unavailable = std::string("probing the shim failed: ") + e.what();
    }
    acc->path = acc->shim_unavailable.empty() ? ReadPath::shim
                : acc->data_ptr_fn != nullptr ? ReadPath::accessors
                                              : ReadPath::methods;
    // FASTOPT_TENSOR_READS=accessors or methods: that path for this process (shim off above)
    if (const char* env = std::getenv("FASTOPT_TENSOR_READS"); env && !std::strcmp(env, "methods"))
      acc->path = ReadPath::methods;
    return acc;
  }();
  return a;
}

// obj.name() without building a bound method; a new reference or nullptr with an error set.
PyObject* call0(PyObject* obj, PyObject* name) {
  PyObject* args[1] = {obj};
  return PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr);
}

bool data_ptr(PyObject* tensor, int64_t* out) {
  PyObject* r = call0(tensor, names().data_ptr);
  if (r == nullptr) return false;
  *out = PyLong_AsLongLong(r);
  Py_DECREF(r);
  return !PyErr_Occurred();
}

// A tensor's grad and metadata on the path in use.
struct Reader {
  TensorAccess* a = access();
  bool fast(PyObject* t) { return a->grad_get != nullptr && a->is_plain(Py_TYPE(t)); }
  PyObject* grad(PyObject* t) {
    return fast(t) ? a->grad_get(t, a->grad_closure) : PyObject_GetAttr(t, names().grad);
  }
  bool ptr(PyObject* t, int64_t* out) {
    PyTypeObject* type = Py_TYPE(t);
    if (a->path == ReadPath::accessors && (type == a->exact[0] || type == a->exact[1])) {
      try {  // it throws (a C++ exception) for a tensor without storage: then the method says
        *out = reinterpret_cast<int64_t>(a->data_ptr_fn(t));
        return true;
      } catch (...) {
      }
    }
    if (!fast(t)) return data_ptr(t, out);
    PyObject* r = a->data_ptr(t, nullptr);
    if (r == nullptr) return false;
    *out = PyLong_AsLongLong(r);
    Py_DECREF(r);
    return !PyErr_Occurred();
  }
  bool numel(PyObject* t, int64_t* out) {
    PyObject* r;
    if (!fast(t))
      r = call0(t, names().numel);
    else if (a->numel->ml_flags & METH_NOARGS)
      r = a->numel->ml_meth(t, nullptr);
    else
      r = reinterpret_cast<PyCFunctionWithKeywords>(
          reinterpret_cast<void (*)(void)>(a->numel->ml_meth))(t, a->empty, nullptr);
    if (r == nullptr) return false;
    *out = PyLong_AsLongLong(r);
    Py_DECREF(r);
    return !PyErr_Occurred();
  }
  // The fields `what` asks for (kShape: the shim path only). false: the read failed.
  bool meta(PyObject* t, unsigned what, TensorMeta* m) {
    if (a->path == ReadPath::shim) return a->shim.read(t, what, m);
    if ((what & kPtr) && !ptr(t, &m->ptr)) return false;
    if ((what & kNumel) && !numel(t, &m->numel)) return false;
    if (what & kDtype) {
      PyObject* d =
          fast(t) ? a->dtype_get(t, a->dtype_closure) : PyObject_GetAttr(t, names().dtype);
      if (d == nullptr) return false;
      Py_DECREF(d);  // torch dtypes are immortal singletons: identity is enough
      a->dtype_code(d, &m->dtype);
    }
    if (what & kDevice) {
      py::object d = py::reinterpret_steal<py::object>(PyObject_GetAttr(t, names().device));
      if (!d || !a->device_code(d.ptr(), &m->device)) return false;
    }
    return true;
  }
  // Is t laid out as the engine walks it: contiguous, or with exactly the param's strides
  // (dense)? 1 yes, 0 no, -1 the read failed. m: t's meta with kShape on the shim path.
  int has_layout(PyObject* t, const TensorMeta& m, Layout layout,
                 const std::vector<int64_t>& strides) {
    if (a->path == ReadPath::shim) {
      if (layout == Layout::contiguous) return contiguous_layout(m);
      if (m.dim != int64_t(strides.size())) return 0;
      return std::equal(strides.begin(), strides.end(), m.strides) ? 1 : 0;
    }
    PyObject* r = layout == Layout::contiguous ? (fast(t) ? a->is_contiguous(t, a->empty, nullptr)
                                                          : call0(t, names().is_contiguous))
                                               : call0(t, names().stride);
    if (r == nullptr) return -1;
    py::object result = py::reinterpret_steal<py::object>(r);
    if (layout == Layout::contiguous) return r == Py_True;
    if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != Py_ssize_t(strides.size())) return 0;
    for (size_t d = 0; d < strides.size(); ++d) {
      const long long s = PyLong_AsLongLong(PyTuple_GET_ITEM(r, Py_ssize_t(d)));
      if (s == -1 && PyErr_Occurred()) return -1;
      if (s != strides[d]) return 0;
    }
    return 1;
  }
};

// The engine of this module for a device type. _C runs cpu tensors on the CPU engine and cuda
// tensors on the CUDA engine (when built); _C_simt runs cpu tensors on the CUDA engine compiled
// for the host emulation, so the CUDA kernels and launch plans execute without a GPU.
std::unique_ptr<Engine> make_engine(const std::string& kind, const std::string& device_type,
                                    int device_index, const std::vector<TensorEntry>& entries,
                                    int64_t chunk_elems) {
  const std::string engine = engine_for(device_type);
  if (engine == "cpu") return make_cpu_engine(kind, entries, chunk_elems);
#if FASTOPT_WITH_CUDA || FASTOPT_SIMT
  if (engine == "cuda" || engine == "simt")
    return make_cuda_engine(kind, entries, device_index, chunk_elems);
#endif
  throw std::invalid_argument("this build of fastopt has no engine for " + device_type +
                              " tensors");
}

}  // namespace

std::string tensor_reads(const std::string& path) {
  TensorAccess* a = access();
  if (!path.empty()) {
    size_t i = 0;
    while (i < std::size(kReadPathNames) && path != kReadPathNames[i]) ++i;
    if (i == std::size(kReadPathNames))
      throw std::invalid_argument("tensor reads: no path '" + path +
                                  "' (shim, accessors or methods)");
    const auto want = ReadPath(i);
    if (want == ReadPath::shim && !a->shim_unavailable.empty())
      throw std::runtime_error("tensor reads: the shim path is off here: " + a->shim_unavailable);
    if (want == ReadPath::accessors && a->data_ptr_fn == nullptr)
      throw std::runtime_error("tensor reads: this torch has no C function for data pointers");
    a->path = want;
  }
  return kReadPathNames[int(a->path)];
}

std::string tensor_reads_unavailable() {
  return access()->shim_unavailable;
}

std::string engine_for(const std::string& device_type) {
#if FASTOPT_SIMT
  if (device_type == "cpu") return "simt";
#else
  if (device_type == "cpu") return "cpu";
#if FASTOPT_WITH_CUDA
  if (device_type == "cuda") return "cuda";
#endif
#endif
  return "";
}

std::vector<std::string> hyper_keys(const std::string& kind) {
  std::vector<std::string> keys;
  if (!with_op(kind.c_str(), [&](auto op, OpId) {
        using Op = decltype(op);
        keys.assign(std::begin(Op::kHyperKeys), std::end(Op::kHyperKeys));
      }))
    throw std::invalid_argument("unknown optimizer kind '" + kind + "'");
  return keys;
}

Plan::Plan(std::string kind, py::list owner_groups, py::object device)
    : kind_(std::move(kind)), device_(device), owner_groups_(owner_groups) {
  std::string device_type = "cpu";
  if (!device_.is_none()) device_type = device_.attr("type").cast<std::string>();
  const std::string engine = engine_for(device_type);
  device_engine_ = engine == "cuda" || engine == "simt";

  for (const std::string& spec : hyper_keys(kind_)) {
    HyperKey k;
    std::string name = spec;
    while (!name.empty() && (name.back() == '?' || name.back() == '!')) {
      (name.back() == '?' ? k.optional : k.structural) = true;
      name.pop_back();
    }
    const size_t dot = name.find('.');
    if (dot != std::string::npos) {
      k.index = std::stoi(name.substr(dot + 1));
      name = name.substr(0, dot);
    }
    k.name = name;
    k.key = py::reinterpret_steal<py::str>(PyUnicode_InternFromString(name.c_str()));
    if (k.name == "lr") lr_key_ = int(keys_.size());
    keys_.push_back(std::move(k));
  }
  for (const char* spec : kRoundingKeys) {  // read for every op, after its own keys
    HyperKey k;
    k.name = std::string(spec, std::strlen(spec) - 1);
    k.optional = true;
    k.key = py::reinterpret_steal<py::str>(PyUnicode_InternFromString(k.name.c_str()));
    keys_.push_back(std::move(k));
  }

  for (py::handle g : owner_groups_) {
    if (!PyDict_Check(g.ptr()))
      throw std::invalid_argument("param group " + std::to_string(groups_.size()) +
                                  " is not a dict");
    groups_.push_back(py::reinterpret_borrow<py::object>(g));
    py::object lst = py::reinterpret_borrow<py::object>(g)[py::str("params")];
    group_sizes_.push_back(py::len(lst));
    group_lists_.push_back(lst);
  }
  hyper_.assign(groups_.size() * keys_.size(), 0.0);
  lr_device_.assign(groups_.size(), nullptr);
}

void Plan::check_hypers(const std::string& kind, py::list groups, py::object device) {
  Plan probe(kind, groups, device);
  std::string reason;
  if (!probe.read_hypers(&reason)) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw std::invalid_argument(reason);
  }
}

Plan::Plan(std::string kind, py::list owner_groups, py::object owner_state, py::list params,
           std::vector<int64_t> entry_of_param, std::vector<int32_t> layouts,
           std::vector<py::object> dense_strides, const std::vector<EntrySpec>& entries,
           py::list held, std::vector<int32_t> sharded, int64_t chunk_elems, py::object device,
           bool check_sizes, py::object sources)
    : Plan(std::move(kind), owner_groups, device) {
  check_sizes_ = check_sizes;
  sharded_ = std::move(sharded);
  tensor_type_ = py::module_::import("torch").attr("Tensor");
  owner_state_ = owner_state;
  params_ = params;
  entry_of_param_ = std::move(entry_of_param);
  layouts_ = std::move(layouts);
  held_ = held;
  if (chunk_elems < 0) throw std::invalid_argument("chunk_elems must be positive");
  std::string device_type = "cpu";
  int device_index = -1;
  if (!device_.is_none()) {
    device_type = device_.attr("type").cast<std::string>();
    py::object index = device_.attr("index");
    device_index = index.is_none() ? -1 : index.cast<int>();
  }
  if (engine_for(device_type) == "cuda" && device_index < 0)
    throw std::invalid_argument("Plan: a cuda device needs an index");
  const size_t n_params = size_t(py::len(params_));
  sources_ = py::none();
  if (!sources.is_none()) {
    if (!PyList_Check(sources.ptr()) || size_t(PyList_GET_SIZE(sources.ptr())) != n_params)
      throw std::invalid_argument("Plan: sources must be a list with one tensor per param");
    // a copy of its own: an edit of the caller's list cannot change what the plan reads
    sources_ = py::reinterpret_steal<py::object>(
        PyList_GetSlice(sources.ptr(), 0, PyList_GET_SIZE(sources.ptr())));
  }
  if (sharded_.empty()) sharded_.assign(n_params, 0);
  if (entry_of_param_.size() != n_params || layouts_.size() != n_params ||
      dense_strides.size() != n_params || sharded_.size() != n_params)
    throw std::invalid_argument("Plan: per-param lists must have one item per param");

  Reader read;
  read_path_ = int(read.a->path);
  auto failed = [](const std::string& what) {
    if (PyErr_Occurred()) throw py::error_already_set();
    throw std::invalid_argument("Plan: reading " + what + " failed");
  };
  for (size_t i = 0; i < n_params; ++i) {
    py::object p = params_[i];
    if (sharded_[i]) p = p.attr("_local_tensor");
    TensorMeta m;
    if (!read.meta(p.ptr(), kPtr | kDtype | kDevice, &m)) failed("param " + std::to_string(i));
    param_data_.push_back(m.ptr);
    param_dtype_.push_back(m.dtype);
    param_device_.push_back(m.device);
    std::vector<int64_t> strides;
    if (!dense_strides[i].is_none()) strides = dense_strides[i].cast<std::vector<int64_t>>();
    dense_strides_.push_back(std::move(strides));
  }
  for (const EntrySpec& spec : entries) {
    if (spec.states.size() != size_t(kMaxStates))
      throw std::invalid_argument("Plan: an entry has " + std::to_string(kMaxStates) +
                                  " state slots");
    TensorEntry e{};
    e.param = reinterpret_cast<void*>(spec.param);
    e.grad = nullptr;
    e.numel = spec.numel;
    // the state tensors themselves: held, and their pointers and sizes re-checked each step
    // (an int is a raw address, unchecked: for tests of the engine's index arithmetic)
    const bool quantized = spec.state_dtype == int32_t(DType::q8);
    if (spec.absmax.size() != (quantized ? size_t(kMaxStates) : 0))
      throw std::invalid_argument("Plan: an entry with 8-bit states has " +
                                  std::to_string(kMaxStates) +
                                  " absmax slots, one with other states none");
    for (int k = 0; k < kSlots; ++k) {
      const bool is_absmax = k >= kMaxStates && k < kAuxSlot;
      py::object state = k < kMaxStates   ? spec.states[size_t(k)]
                         : k == kAuxSlot  ? spec.aux
                         : k == kStepSlot ? spec.step
                         : quantized      ? spec.absmax[size_t(k - kMaxStates)]
                                          : py::none();
      if (!state) state = py::none();
      void* at = nullptr;
      if (PyLong_Check(state.ptr())) {
        at = reinterpret_cast<void*>(state.cast<int64_t>());
        state = py::none();
      }
      entry_states_.push_back(state);
      state_dtype_.push_back(-1);
      if (!state.is_none()) {
        TensorMeta m;
        if (!read.meta(state.ptr(), kPtr | kNumel | kDtype, &m)) failed("a state tensor");
        state_dtype_.back() = m.dtype;
        if (m.numel != slot_numel(e, k))
          throw std::invalid_argument(is_absmax        ? "Plan: an absmax needs one value per block"
                                      : k == kStepSlot ? "Plan: a step count has one element"
                                                       : "Plan: a state's size is not its param's");
        auto dtype = [&] { return py::str(state.attr("dtype")).cast<std::string>(); };
        if (quantized && k < kAuxSlot && dtype() != (is_absmax ? "torch.float32" : "torch.uint8"))
          throw std::invalid_argument(
              "Plan: 8-bit states are uint8 codes with a float32 absmax per block");
        if (k == kStepSlot && dtype() != "torch.float32")
          throw std::invalid_argument("Plan: a step count is a float32 tensor");
        at = reinterpret_cast<void*>(m.ptr);
      }
      if (k < kMaxStates)
        e.state[k] = at;
      else if (is_absmax)
        e.absmax[k - kMaxStates] = static_cast<float*>(at);
      else if (k == kAuxSlot)
        e.aux = at;
      else
        e.step = static_cast<float*>(at);
    }
    if (quantized)
      for (int k = 0; k < kMaxStates; ++k)
        if ((e.state[k] == nullptr) != (e.absmax[k] == nullptr))
          throw std::invalid_argument("Plan: an 8-bit state needs its absmax, and only it");
    for (int32_t code : {spec.param_dtype, spec.grad_dtype, spec.state_dtype})
      if (code < 0 || code > int32_t(DType::q8) ||
          (code == int32_t(DType::q8) &&
           (code != spec.state_dtype || spec.param_dtype == code || spec.grad_dtype == code)))
        throw std::invalid_argument("Plan: bad dtype code " + std::to_string(code));
    e.param_dtype = DType(spec.param_dtype);
    e.grad_dtype = DType(spec.grad_dtype);
    e.state_dtype = DType(spec.state_dtype);
    // the precision mode's contract (precision.h): 16-bit params; master and kahan need their
    // buffer (float32, or the param's dtype), stochastic rounding a bfloat16 param
    if (spec.param_mode < 0 || spec.param_mode >= kNumParamModes)
      throw std::invalid_argument("Plan: bad param mode " + std::to_string(spec.param_mode));
    e.param_mode = ParamMode(spec.param_mode);
    const bool needs_aux = e.param_mode == ParamMode::master || e.param_mode == ParamMode::kahan;
    if (e.param_mode != ParamMode::nearest &&
        (e.param_dtype == DType::f32 || (needs_aux && e.aux == nullptr && e.numel > 0) ||
         (!needs_aux && e.aux != nullptr) ||
         (e.param_mode == ParamMode::stochastic && e.param_dtype != DType::bf16)))
      throw std::invalid_argument(
          "Plan: master and kahan modes need a 16-bit param and their buffer, stochastic "
          "rounding a bfloat16 param");
    if (needs_aux && !spec.aux.is_none() && !PyLong_Check(spec.aux.ptr())) {
      const std::string want = e.param_mode == ParamMode::master
                                   ? "torch.float32"
                                   : "torch." + std::string(dtype_name(e.param_dtype));
      if (py::str(spec.aux.attr("dtype")).cast<std::string>() != want)
        throw std::invalid_argument("Plan: the precision buffer must be a " + want + " tensor");
    }
    // it indexes the per-tensor sums of sharded reductions (tensor_sums_size())
    if (spec.tensor_id < 0 || spec.tensor_id >= int64_t(n_params))
      throw std::invalid_argument("Plan: tensor_id must be the index of one of the " +
                                  std::to_string(n_params) + " params");
    e.tensor_id = uint32_t(spec.tensor_id);
    if (spec.group < 0 || size_t(spec.group) >= groups_.size())
      throw std::invalid_argument("Plan: an entry's group " + std::to_string(spec.group) +
                                  " is not one of the " + std::to_string(groups_.size()));
    e.group = spec.group;
    e.fresh = spec.fresh;
    int64_t grad_dtype = -1;
    if (!read.a->dtype_code(spec.expected_grad_dtype.ptr(), &grad_dtype)) failed("a grad dtype");
    grad_dtype_.push_back(grad_dtype);
    total_elems_ += e.numel;
    entries_.push_back(e);
  }

  // a grad of any other type than the one Python validated (a tensor subclass) forces a rebuild
  grad_type_.assign(entries_.size(), tensor_type_);
  for (size_t i = 0; i < n_params; ++i) {
    if (entry_of_param_[i] < 0) continue;
    py::object grad =
        sources_.is_none()
            ? py::object(params_[i].attr("grad"))
            : py::reinterpret_borrow<py::object>(PyList_GET_ITEM(sources_.ptr(), Py_ssize_t(i)));
    if (!grad.is_none()) grad_type_[size_t(entry_of_param_[i])] = py::type::of(grad);
  }

  std::string reason;
  if (!read_hypers(&reason)) throw std::invalid_argument(reason);
  structural_ = hyper_;
  snapshot_state();
  engine_ = make_engine(kind_, device_type, device_index, entries_, chunk_elems);
}

const void* Plan::slot_address(const TensorEntry& e, int k) {
  if (k < kMaxStates) return e.state[k];
  if (k < kAuxSlot) return e.absmax[k - kMaxStates];
  return k == kAuxSlot ? e.aux : e.step;
}

int64_t Plan::slot_numel(const TensorEntry& e, int k) {
  if (k >= kMaxStates && k < kAuxSlot) return (e.numel + kQuantBlock - 1) / kQuantBlock;
  return k == kStepSlot ? 1 : e.numel;
}

// optimizer.state as it is now: its items and, for each dict among its values, that dict's
// items, in order and by identity. Holding them keeps them alive, so an address compared later
// cannot have been reused by another object.
void Plan::snapshot_state() {
  state_items_.clear();
  if (!PyDict_Check(owner_state_.ptr())) return;
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  while (PyDict_Next(owner_state_.ptr(), &pos, &key, &value)) {
    state_items_.push_back(py::reinterpret_borrow<py::object>(key));
    state_items_.push_back(py::reinterpret_borrow<py::object>(value));
    if (!PyDict_Check(value)) continue;
    Py_ssize_t inner = 0;
    PyObject *k, *v;
    while (PyDict_Next(value, &inner, &k, &v)) {
      state_items_.push_back(py::reinterpret_borrow<py::object>(k));
      state_items_.push_back(py::reinterpret_borrow<py::object>(v));
    }
    state_items_.push_back(py::object());  // end of this dict (a null, never an item)
  }
}

// Is optimizer.state still what snapshot_state() saw? Any edit (clear, del, a new dict, a state
// tensor or step replaced, a key added) changes the sequence; no hashing, no Python code.
bool Plan::state_unchanged() const {
  PyObject* state = owner_state_.ptr();
  if (!PyDict_Check(state)) return false;
  size_t i = 0;
  const size_t n = state_items_.size();
  Py_ssize_t pos = 0;
  PyObject *key, *value;
  while (PyDict_Next(state, &pos, &key, &value)) {
    if (i + 2 > n || state_items_[i].ptr() != key || state_items_[i + 1].ptr() != value)
      return false;
    i += 2;
    if (!PyDict_Check(value)) continue;
    Py_ssize_t inner = 0;
    PyObject *k, *v;
    while (PyDict_Next(value, &inner, &k, &v)) {
      if (i + 2 > n || state_items_[i].ptr() != k || state_items_[i + 1].ptr() != v) return false;
      i += 2;
    }
    if (i >= n || state_items_[i].ptr() != nullptr) return false;
    ++i;
  }
  return i == n;
}

std::vector<std::string> Plan::hyper_names() const {
  std::vector<std::string> out;
  for (const HyperKey& k : keys_)
    out.push_back(k.name + (k.index >= 0 ? "." + std::to_string(k.index) : ""));
  return out;
}

bool Plan::read_hypers(std::string* reason) {
  const size_t nk = keys_.size();
  for (size_t g = 0; g < groups_.size(); ++g) {
    PyObject* group = groups_[g].ptr();
    for (size_t k = 0; k < nk; ++k) {
      const HyperKey& key = keys_[k];
      PyObject* v = PyDict_GetItemWithError(group, key.key.ptr());  // borrowed
      if (v == nullptr) {
        if (PyErr_Occurred()) return false;
        if (key.optional) {
          hyper_[g * nk + k] = 0.0;
          continue;
        }
        *reason = "param group " + std::to_string(g) + " has no '" + key.name + "'";
        return false;
      }
      if (int(k) == lr_key_ && device_engine_) {
        lr_device_[g] = nullptr;
        if (!PyFloat_CheckExact(v) && !PyLong_CheckExact(v)) {
          if (!read_device_lr(g, v, reason)) return false;
          if (lr_device_[g] != nullptr) {
            hyper_[g * nk + k] = 0.0;  // unused: the device reads the tensor
            continue;
          }
        }
      }
      py::object item;
      if (key.index >= 0) {
        item = py::reinterpret_steal<py::object>(PySequence_GetItem(v, key.index));
        if (!item) {
          PyErr_Clear();
          *reason = "param group " + std::to_string(g) + ": '" + key.name + "' needs item " +
                    std::to_string(key.index);
          return false;
        }
        v = item.ptr();
      }
      const double d = PyFloat_AsDouble(v);
      if (d == -1.0 && PyErr_Occurred()) {
        PyErr_Clear();
        *reason = "param group " + std::to_string(g) + ": '" + key.name + "' is not a number";
        return false;
      }
      hyper_[g * nk + k] = d;
    }
  }
  return true;
}

// A tensor lr on the params' device is read by the device at run time (no host sync, and a
// captured CUDA graph follows in-place updates of it); any other value is read as a number.
bool Plan::read_device_lr(size_t group, PyObject* value, std::string* reason) {
  py::handle v(value);
  if (!py::hasattr(v, "data_ptr") || !py::hasattr(v, "device")) return true;
  const py::object device = v.attr("device");
  if (!device.equal(device_)) return true;
  const std::string where = "param group " + std::to_string(group) + ": a tensor 'lr' ";
  if (py::str(v.attr("dtype")).cast<std::string>() != "torch.float32" ||
      v.attr("numel")().cast<int64_t>() != 1) {
    *reason = where + "on the params' device must be a one-element float32 tensor";
    return false;
  }
  lr_device_[group] = reinterpret_cast<const float*>(v.attr("data_ptr")().cast<int64_t>());
  return true;
}

py::tuple Plan::refresh() {
  auto rebuild = [](const std::string& why) {
    PyErr_Clear();
    return py::make_tuple(int(Refresh::rebuild), why, py::list());
  };
  const Names& n = names();
  // structure: same groups, same param lists, same params in the same order
  if (size_t(PyList_GET_SIZE(owner_groups_.ptr())) != groups_.size())
    return rebuild("param groups added or removed");
  Py_ssize_t flat = 0;
  PyObject* params = params_.ptr();
  for (size_t g = 0; g < groups_.size(); ++g) {
    PyObject* group = PyList_GET_ITEM(owner_groups_.ptr(), g);
    if (group != groups_[g].ptr()) return rebuild("param group replaced");
    PyObject* lst = PyDict_GetItemWithError(group, n.params);
    if (lst != group_lists_[g].ptr() || PyList_Check(lst) == 0 ||
        PyList_GET_SIZE(lst) != group_sizes_[g])
      return rebuild("params of a group changed");
    for (Py_ssize_t j = 0; j < group_sizes_[g]; ++j, ++flat)
      if (PyList_GET_ITEM(lst, j) != PyList_GET_ITEM(params, flat))
        return rebuild("params of a group changed");
  }
  if (!state_unchanged()) return rebuild("optimizer state edited");
  Reader read;
  if (int(read.a->path) != read_path_) return rebuild("the path of tensor reads changed");
  // the shim path checks a grad's layout on its sizes and strides, read with the rest
  const unsigned layout_reads = read.a->path == ReadPath::shim ? unsigned(kShape) : 0u;

  py::list fixups;
  const Py_ssize_t n_params = PyList_GET_SIZE(params);
  for (Py_ssize_t i = 0; i < n_params; ++i) {
    PyObject* p = PyList_GET_ITEM(params, i);
    const int64_t entry = entry_of_param_[i];
    PyObject* grad = nullptr;
    if (sources_.is_none()) {
      grad = read.grad(p);
    } else {  // a new reference, as read.grad's
      grad = PyList_GET_ITEM(sources_.ptr(), i);
      Py_INCREF(grad);
    }
    if (grad == nullptr) return rebuild("reading .grad failed");
    py::object grad_ref = py::reinterpret_steal<py::object>(grad);
    if (entry < 0) {
      if (grad != Py_None) return rebuild("a param without state got a grad");
      continue;
    }
    TensorEntry& e = entries_[entry];
    py::object local_ref;
    if (sharded_[i]) {  // FSDP2 may swap a DTensor's local shard: read it every step
      local_ref = py::reinterpret_steal<py::object>(PyObject_GetAttr(p, n.local));
      if (!local_ref ||
          Py_TYPE(local_ref.ptr()) != reinterpret_cast<PyTypeObject*>(tensor_type_.ptr()))
        return rebuild("a DTensor's local shard is not a plain tensor");
      p = local_ref.ptr();
    }
    TensorMeta pm;
    if (!read.meta(p, kPtr | kNumel | kDtype | kDevice, &pm))
      return rebuild("reading a param failed");
    if (pm.ptr != param_data_[i]) return rebuild("a param's storage changed");
    if (pm.numel != e.numel && check_sizes_) return rebuild("a param's size changed");
    if (pm.dtype != param_dtype_[i]) return rebuild("a param's dtype changed");
    if (pm.device != param_device_[i]) return rebuild("a param's device changed");
    // A state tensor that is still in optimizer.state (state_unchanged) and still at its
    // address is still in its storage: another storage at that address cannot exist while the
    // tensor holds this one, and a smaller view or resize_ keeps the storage it had.
    for (int k = 0; k < kSlots; ++k) {
      const size_t slot = size_t(entry) * kSlots + k;
      PyObject* state = entry_states_[slot].ptr();
      if (state == Py_None) continue;
      TensorMeta sm;
      if (!read.meta(state, kPtr | kNumel | kDtype, &sm))
        return rebuild("reading a state tensor failed");
      if (sm.ptr != reinterpret_cast<int64_t>(slot_address(e, k)))
        return rebuild("a state tensor moved");
      if (sm.numel != slot_numel(e, k) || sm.dtype != state_dtype_[slot])
        return rebuild("a state tensor's size or dtype changed");
    }
    e.active = grad != Py_None;
    e.grad = nullptr;
    if (!e.active) continue;
    if (reinterpret_cast<PyObject*>(Py_TYPE(grad)) != grad_type_[entry].ptr())
      return rebuild("a grad of another type");
    py::object grad_local;
    if (sharded_[i]) {
      grad_local = py::reinterpret_steal<py::object>(PyObject_GetAttr(grad, n.local));
      if (!grad_local ||
          Py_TYPE(grad_local.ptr()) != reinterpret_cast<PyTypeObject*>(tensor_type_.ptr()))
        return rebuild("a DTensor grad's local shard is not a plain tensor");
      grad = grad_local.ptr();
    }
    const Layout layout = Layout(layouts_[i]);
    if (layout == Layout::staged) {
      fixups.append(entry);
      continue;
    }
    TensorMeta gm;
    if (!read.meta(grad, kPtr | kNumel | kDtype | kDevice | layout_reads, &gm))
      return rebuild("reading a grad failed (a sparse grad?)");
    if (gm.dtype != grad_dtype_[entry]) return rebuild("a grad's dtype changed");
    if (gm.device != param_device_[i]) return rebuild("a grad on another device than its param");
    if (gm.numel != e.numel && check_sizes_) return rebuild("a grad's size is not its param's");
    const int same_layout = read.has_layout(grad, gm, layout, dense_strides_[i]);
    if (same_layout < 0) return rebuild("reading a grad's layout failed");
    if (same_layout == 0) {
      fixups.append(entry);
      continue;
    }
    if (gm.ptr == 0 && e.numel > 0) return rebuild("a grad without storage");
    e.grad = reinterpret_cast<const void*>(gm.ptr);
  }

  std::string reason;
  if (!read_hypers(&reason)) return rebuild(reason);
  const size_t nk = keys_.size();
  for (size_t g = 0; g < groups_.size(); ++g)
    for (size_t k = 0; k < nk; ++k)
      if (keys_[k].structural && (hyper_[g * nk + k] != 0.0) != (structural_[g * nk + k] != 0.0))
        return rebuild("'" + keys_[k].name + "' switched on or off");
  return py::make_tuple(int(Refresh::ok), std::string(), fixups);
}

void Plan::set_grad(int64_t entry, int64_t ptr, bool active) {
  if (entry < 0 || entry >= num_entries()) throw std::out_of_range("Plan.set_grad: bad entry");
  entries_[entry].grad = reinterpret_cast<const void*>(ptr);
  entries_[entry].active = active;
}

StepInputs Plan::inputs(int num_threads, void* stream) {
  StepInputs in;
  in.entries = entries_.data();
  in.n_entries = num_entries();
  in.hyper = hyper_.data();
  in.hyper_stride = int64_t(keys_.size());
  in.n_groups = int64_t(groups_.size());
  in.lr_device = lr_device_.data();
  in.num_threads = num_threads < 1 ? 1 : num_threads;
  in.stream = stream;
  return in;
}

void Plan::run(int num_threads, const GradPipeline& pipe, void* stream) {
  const StepInputs in = inputs(num_threads, stream);
  py::gil_scoped_release release;
  engine_->step(in, pipe);
}

std::vector<double> Plan::tensor_norms(int which, int norm_type, double p, float scale,
                                       int num_threads, void* stream) {
  if (which != 0 && which != 1) throw std::invalid_argument("which must be 0 or 1");
  if (norm_type < 0 || norm_type > 3) throw std::invalid_argument("bad norm type");
  const StepInputs in = inputs(num_threads, stream);
  py::gil_scoped_release release;
  return engine_->tensor_norms(in, which, NormMeasure{NormType(norm_type), p}, scale);
}

std::vector<LaunchRecord> Plan::launches(const GradPipeline& pipe) {
  return engine_->launches(inputs(1, nullptr), pipe);
}

void Plan::bind_workspace(int64_t ptr, void* stream) {
  engine_->bind_workspace(reinterpret_cast<void*>(ptr), stream);
}

std::vector<int64_t> Plan::active_entries() const {
  std::vector<int64_t> out;
  for (size_t i = 0; i < entries_.size(); ++i)
    if (entries_[i].active) out.push_back(int64_t(i));
  return out;
}

}  // namespace fastopt
