"""Loads the compiled engine ``fastopt._C`` and reports what was built.

``import fastopt`` never fails because of the extension: only using a fused optimizer does, with
an error that says what is missing and how to rebuild.
"""

from __future__ import annotations

import os
import platform
import sys
from types import ModuleType
from typing import Any

import torch  # noqa: F401  (first: _C then shares torch's OpenMP runtime and thread pool)

_C: ModuleType | None
try:
    from fastopt import _C
except ImportError as exc:  # missing or broken build
    _C = None
    _IMPORT_ERROR: ImportError | None = exc
else:
    _IMPORT_ERROR = None

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
    info.update(
        backends=list(built["backends"]),
        cpu_isa=built["cpu_isa"],
        cpu_isas_built=list(built["cpu_isas_built"]),
        cpu_isa_override=os.environ.get("FASTOPT_CPU_ISA") or None,
        openmp=built["openmp"],
        compiler=built["compiler"],
        cpu_chunk_elems=built["cpu_chunk_elems"],
        extension=getattr(_C, "__file__", "?"),
    )
    for key in ("cuda_archs", "cuda_runtime"):
        if key in built:
            info[key] = built[key]
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
