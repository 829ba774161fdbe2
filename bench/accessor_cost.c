/* What each read of the per-step refresh costs: torch's C accessors called the way
 * csrc/plan.cpp calls them (the getter or method function of torch._C.TensorBase, directly),
 * over a list of tensors, in nanoseconds per call (best of `reps` passes).
 * Built and run by bench/accessor_cost.py; links nothing but Python. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <time.h>

static double now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

/* cost(tensors, descriptor_or_address, kind, reps[, offset]): kind 0 getter, 1 METH_NOARGS
 * method, 2 METH_VARARGS|METH_KEYWORDS method, 3 an address of `void* (*)(PyObject*)`, 4 nothing
 * (the loop itself), 5 an address of a C shim function `int32_t (*)(AtenTensorHandle, T*)`
 * called on the at::Tensor at `offset` in each tensor object (as csrc/plan.cpp calls it) */
static PyObject* cost(PyObject* self, PyObject* args) {
  PyObject *list, *what;
  int kind, reps;
  Py_ssize_t offset = 0;
  if (!PyArg_ParseTuple(args, "O!Oii|n", &PyList_Type, &list, &what, &kind, &reps, &offset))
    return NULL;
  const Py_ssize_t n = PyList_GET_SIZE(list);
  PyObject* empty = PyTuple_New(0);
  void* (*fn)(PyObject*) = NULL;
  int32_t (*shim)(void*, void*) = NULL;
  if (kind == 3) fn = (void* (*)(PyObject*))PyLong_AsVoidPtr(what);
  if (kind == 5) shim = (int32_t (*)(void*, void*))PyLong_AsVoidPtr(what);
  double best = 1e30;
  volatile uintptr_t sink = 0;
  for (int r = 0; r < reps; r++) {
    const double t0 = now_ns();
    for (Py_ssize_t i = 0; i < n; i++) {
      PyObject* t = PyList_GET_ITEM(list, i);
      PyObject* res = NULL;
      if (kind == 0) {
        PyGetSetDef* g = ((PyGetSetDescrObject*)what)->d_getset;
        res = g->get(t, g->closure);
      } else if (kind == 1) {
        res = ((PyMethodDescrObject*)what)->d_method->ml_meth(t, NULL);
      } else if (kind == 2) {
        PyCFunctionWithKeywords m =
            (PyCFunctionWithKeywords)(void (*)(void))((PyMethodDescrObject*)what)->d_method->ml_meth;
        res = m(t, empty, NULL);
      } else if (kind == 3) {
        sink += (uintptr_t)fn(t);
        continue;
      } else if (kind == 5) {
        uint64_t out = 0;
        sink += (uintptr_t)shim((char*)t + offset, &out) + (uintptr_t)out;
        continue;
      } else {
        sink += (uintptr_t)Py_TYPE(t);
        continue;
      }
      if (res == NULL) {
        Py_DECREF(empty);
        return NULL;
      }
      Py_DECREF(res);
    }
    const double dt = (now_ns() - t0) / (double)n;
    if (dt < best) best = dt;
  }
  Py_DECREF(empty);
  return PyFloat_FromDouble(best);
}

static PyMethodDef methods[] = {{"cost", cost, METH_VARARGS, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "accessor_cost", NULL, -1, methods};
PyMODINIT_FUNC PyInit_accessor_cost(void) { return PyModule_Create(&module); }
