"""What each read of the per-step refresh costs, in ns per tensor: torch's stable C shim on the
at::Tensor a tensor object holds (the refresh's ``shim`` path), torch's C accessors called
directly (its ``accessors`` path) and torch's C function for inductor's data pointer, each the
way ``csrc/plan.cpp`` calls them.

    flock /tmp/cpu.lock python bench/accessor_cost.py [--tensors 1000] [--reps 200]

Compiles ``bench/accessor_cost.c`` (Python headers only) into a temporary directory with the
system C compiler, then times each read over the params and over their grads (best pass).
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import torch

# (name, how it is called): 0 getter, 1 METH_NOARGS method, 2 METH_VARARGS|KEYWORDS method
READS = [
    ("grad", 0, "params"),
    ("dtype", 0, "grads"),
    ("numel", None, "grads"),
    ("is_contiguous", 2, "grads"),
    ("data_ptr", 1, "grads"),
    ("nbytes", 0, "grads"),
    ("_version", 0, "grads"),
]


def build(tmp: Path):
    src = Path(__file__).with_name("accessor_cost.c")
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    out = tmp / f"accessor_cost{suffix}"
    cc = sysconfig.get_config_var("CC").split()[0] or "cc"
    include = sysconfig.get_paths()["include"]
    subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", f"-I{include}", str(src), "-o", str(out)], check=True
    )
    spec = importlib.util.spec_from_file_location("accessor_cost", out)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# the C shim's reads the refresh makes (torch/csrc/inductor/aoti_torch/c/shim.h)
SHIM_READS = [
    "aoti_torch_get_data_ptr",
    "aoti_torch_get_numel",
    "aoti_torch_get_dtype",
    "aoti_torch_get_device_type",
    "aoti_torch_get_device_index",
    "aoti_torch_get_dim",
    "aoti_torch_get_sizes",
    "aoti_torch_get_strides",
]


def cdata_offset(t: torch.Tensor) -> int:
    """Where the tensor object holds its at::Tensor: the offset holding the TensorImpl pointer
    that an at::Tensor made from it holds (found as csrc/plan.cpp finds it)."""
    capsule = torch._C._aoti.unsafe_alloc_void_ptr_from_tensor(t)
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    handle = get(capsule, None)
    impl = ctypes.c_void_p.from_address(handle).value
    found = [
        off
        for off in range(16, type(t).__basicsize__, 8)
        if ctypes.c_void_p.from_address(id(t) + off).value == impl
    ]
    torch._C._aoti.alloc_tensor_by_stealing_from_void_ptr(capsule)  # frees the at::Tensor
    assert len(found) == 1, found
    return found[0]


def method_kind(descr) -> int:
    """1 for METH_NOARGS, 2 for METH_VARARGS|METH_KEYWORDS (torch's numel is either)."""
    sig = getattr(descr, "__text_signature__", None)
    return 1 if sig == "($self, /)" else 2


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=1000)
    ap.add_argument("--reps", type=int, default=200)
    args = ap.parse_args()
    torch.set_num_threads(1)
    params = [torch.nn.Parameter(torch.randn(16)) for _ in range(args.tensors)]
    for p in params:
        p.grad = torch.randn(16)
    lists = {"params": params, "grads": [p.grad for p in params]}
    base = torch._C.TensorBase.__dict__
    with tempfile.TemporaryDirectory() as tmp:
        mod = build(Path(tmp))
        loop = mod.cost(params, None, 4, args.reps)
        print(
            f"# per-call cost, {args.tensors} tensors, torch {torch.__version__} (loop {loop:.1f} ns subtracted)\n"
        )
        print("| read | of | ns per call |")
        print("|---|---|---:|")
        for name, kind, of in READS:
            descr = base[name]
            if kind is None:
                kind = method_kind(descr)
            ns = mod.cost(lists[of], descr, kind, args.reps) - loop
            print(f"| `{name}` | {of} | {ns:.1f} |")
        fast = torch._C._dynamo.guards._torchinductor_pyobject_tensor_data_ptr
        ns = mod.cost(lists["grads"], fast, 3, args.reps) - loop
        print(f"| `_torchinductor_pyobject_tensor_data_ptr` (C function) | grads | {ns:.1f} |")
        lib = ctypes.CDLL(os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"))
        offset = cdata_offset(lists["grads"][0])
        for name in SHIM_READS:
            addr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
            ns = mod.cost(lists["grads"], addr, 5, args.reps, offset) - loop
            print(f"| `{name}` (C shim) | grads | {ns:.1f} |")


if __name__ == "__main__":
    sys.exit(main())
