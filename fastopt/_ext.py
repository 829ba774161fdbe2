"""Loads the compiled engine ``fastopt._C`` and reports what was built.

``import fastopt`` never fails because of the extension: only using a fused optimizer does, with
an error that says what is missing and how to rebuild.

``FASTOPT_ENGINE=simt`` loads the test-only module ``fastopt._C_simt`` in its place: the same
API, with cpu tensors stepped by the CUDA engine's kernels under a host emulation of the CUDA
execution model, so the test suite runs the CUDA code paths on machines without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import platform
import sys
from types import ModuleType
from typing import Any

import torch  # noqa: F401  (first: _C then shares torch's OpenMP runtime and thread pool)

ENGINE = os.environ.get("FASTOPT_ENGINE", "").strip().lower() or "default"


def _load(name: str) -> tuple[ModuleType | None, ImportError | None]:
    try:
        return importlib.import_module(f"fastopt.{name}"), None
    except ImportError as exc:  # missing or broken build
        return None, exc


_C: ModuleType | None
_IMPORT_ERROR: ImportError | None
if ENGINE == "simt":
    _C, _IMPORT_ERROR = _load("_C_simt")
    if _IMPORT_ERROR is not None:
        _IMPORT_ERROR = ImportError(
            f"FASTOPT_ENGINE=simt needs fastopt._C_simt, built with -DFASTOPT_SIMT=ON "
            f"({_IMPORT_ERROR})"
        )
elif ENGINE == "default":
    _C, _IMPORT_ERROR = _load("_C")
else:
    _C, _IMPORT_ERROR = None, ImportError(f"FASTOPT_ENGINE must be 'simt' or unset, got {ENGINE!r}")

REBUILD_HINT = (
    "Rebuild it from the source tree with `pip install --force-reinstall --no-deps .` "
    "(needs a C++17 compiler and CMake >= 3.18; `fastopt info` shows what was built)."
)


class ExtensionMissingError(RuntimeError):
    """The compiled engine fastopt._C could not be loaded."""


def require_C() -> ModuleType:
    """The compiled module, or a clear error when it is not available."""
    if _C is None:
        raise ExtensionMissingError(
            f"fastopt's compiled engine fastopt._C is not available: {_IMPORT_ERROR}. "
            + REBUILD_HINT
        )
    return _C


def build_info() -> dict[str, Any]:
    """fastopt, torch and Python versions, the backends built, the CPU path and threads."""
    import fastopt

    info: dict[str, Any] = {
        "fastopt": fastopt.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "threads": torch.get_num_threads(),
    }
    if _C is None:
        info.update(backends=[], extension_error=str(_IMPORT_ERROR))
        return info
    built = _C.build_info()
    # the real engine's build (also when FASTOPT_ENGINE=simt), plus the emulation if built
    real = _C if ENGINE == "default" else _load("_C")[0]
    real_info = real.build_info() if real is not None else {}
    backends = list(real_info.get("backends", ()))
    if importlib.util.find_spec("fastopt._C_simt") is not None:
        backends.append("simt")
    info.update(
        backends=backends,
        engine="simt (FASTOPT_ENGINE=simt: cpu tensors run the emulated CUDA engine)"
        if ENGINE == "simt"
        else "default",
        cpu_isa=built["cpu_isa"],
        cpu_isas_built=list(built["cpu_isas_built"]),
        cpu_isas_supported=list(built["cpu_isas_supported"]),
        cpu_isa_override=os.environ.get("FASTOPT_CPU_ISA") or None,
        openmp=built["openmp"],
        compiler=built["compiler"],
        cpu_chunk_elems=built["cpu_chunk_elems"],
        extension=getattr(_C, "__file__", "?"),
    )
    for key in ("cuda_runtime", "cuda_archs", "cuda_param_bytes"):
        if key in real_info:
            info[key] = real_info[key]
    if "cuda" in backends:
        info["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return info


def format_info(info: dict[str, Any]) -> str:
    width = max(len(k) for k in info)
    lines = []
    for key, value in info.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "none"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


def info(file: Any = None) -> dict[str, Any]:
    """Print what fastopt was built with (as ``fastopt info`` does) and return it as a dict."""
    data = build_info()
    print(format_info(data), file=file or sys.stdout)
    return data
