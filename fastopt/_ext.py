"""Loads the compiled engine ``fastopt._C`` and reports what was built.

``import fastopt`` never fails because of the extension: only using a fused optimizer does, with
an error that says what is missing and how to rebuild.

``FASTOPT_ENGINE=simt`` loads the test-only module ``fastopt._C_simt`` in its place: the same
API, with cpu tensors stepped by the CUDA engine's kernels under a host emulation of the CUDA
execution model, so the test suite runs the CUDA code paths on machines without a GPU.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
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


def _has_engine(package_dir: Path) -> bool:
    return any(package_dir.glob("_C.*.so")) or any(package_dir.glob("_C.*.pyd"))


def shadowed_install(
    imported_dir: str | os.PathLike[str], path: Sequence[str] | None = None
) -> Path | None:
    """The installed fastopt that a source checkout hides, or None.

    ``imported_dir`` is the package Python imported; it counts as a source checkout when its
    parent holds ``pyproject.toml`` and ``csrc/``. The answer is the package directory of an
    installed fastopt distribution (found on ``path``, default ``sys.path``) that is another
    directory and holds the compiled engine: the situation after ``pip install .`` when Python
    runs from the clone's root, where ``python -c``, ``python -m`` and scripts put the current
    directory first on ``sys.path``.
    """
    imported = Path(imported_dir).resolve()
    root = imported.parent
    if not ((root / "pyproject.toml").is_file() and (root / "csrc").is_dir()):
        return None
    if _has_engine(imported):
        return None
    for dist in importlib.metadata.distributions(name="fastopt", path=list(path or sys.path)):
        installed = Path(str(dist.locate_file("fastopt"))).resolve()
        if installed != imported and _has_engine(installed):
            return installed
    return None


def missing_engine_message(
    error: BaseException | None,
    imported_dir: str | os.PathLike[str] | None = None,
    path: Sequence[str] | None = None,
) -> str:
    """Why the engine is missing and the cure: rebuilding, or not importing the source tree.

    ``imported_dir``: the fastopt package in use (default: this one); ``path``: where to look
    for an installed fastopt (default: ``sys.path``).
    """
    if imported_dir is None:
        imported_dir = Path(__file__).parent
    head = f"fastopt's compiled engine fastopt._C is not available ({error})."
    installed = shadowed_install(imported_dir, path) if ENGINE == "default" else None
    if installed is None:
        return f"{head} {REBUILD_HINT}"
    return (
        f"{head} Python imported fastopt from the source checkout {imported_dir}, which has no "
        f"compiled engine, instead of the installed fastopt in {installed}: `python -c`, "
        "`python -m`, `torchrun -m` and scripts run from the clone's root put that directory "
        "first on sys.path. Use the `fastopt` command (`fastopt train ...`; under torchrun: "
        "`torchrun --nproc_per_node N --no-python fastopt train ...`), or run Python from "
        "another directory. Rebuilding does not help."
    )


def require_C() -> ModuleType:
    """The compiled module, or a clear error when it is not available."""
    if _C is None:
        raise ExtensionMissingError(missing_engine_message(_IMPORT_ERROR))
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
        info.update(backends=[], extension_error=missing_engine_message(_IMPORT_ERROR))
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
        tensor_reads=tensor_reads_summary(_C),
        extension=getattr(_C, "__file__", "?"),
    )
    for key in ("cuda_runtime", "cuda_driver", "cuda_archs", "cuda_param_bytes"):
        if key in real_info:
            info[key] = real_info[key]
    if "cuda" in backends:
        info["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if info["cuda_devices"]:  # what creating an engine on GPU 0 would refuse, if anything
            problem = real.cuda_device_problem(
                real.cuda_driver_version(),
                cuda_version_number(info.get("cuda_runtime", "")),
                *torch.cuda.get_device_capability(0),
                info.get("cuda_archs", ""),
            )
            if problem:
                info["cuda_problem"] = problem
    ordered: dict[str, Any] = {}
    for key, value in info.items():
        ordered[key] = value
        if key == "backends":  # the plain CUDA line right under the backends it explains
            ordered["cuda"] = cuda_summary(info, torch_cuda=torch.version.cuda)
    return ordered


def tensor_reads_summary(C: Any) -> str:
    """How each step reads every param, grad and state tensor (csrc/plan.cpp, ReadPath): the
    path in use and, when it is not torch's C shim, why."""
    path = C.tensor_reads()
    why = C.tensor_reads_unavailable()
    return path if path == "shim" or not why else f"{path} (shim off: {why})"


def cuda_version_number(text: str) -> int:
    """``'13.0 (static)'`` or ``'12.4'`` as cudaDriverGetVersion writes it (13000, 12040);
    0 for ``'none'`` or an empty text."""
    head = text.split()[0] if text.split() else ""
    major, _, minor = head.partition(".")
    if not major.isdigit():
        return 0
    return int(major) * 1000 + (int(minor) * 10 if minor.isdigit() else 0)


def cuda_summary(info: dict[str, Any], torch_cuda: str | None) -> str:
    """One plain line on the CUDA engine: built or not, and whether a GPU can use it.

    ``info`` is :func:`build_info`'s dict; ``torch_cuda`` is ``torch.version.cuda`` (None for a
    CPU-only torch, which sees no GPU whatever the machine has).
    """
    if "cuda" not in info.get("backends", ()):
        return "not built (no CUDA compiler at build time, or FASTOPT_CUDA=off)"
    runtime = str(info.get("cuda_runtime", "")).replace(" (static)", "")
    built = f"built with CUDA {runtime}" if runtime else "built with CUDA"
    driver = info.get("cuda_driver")
    if driver:
        built += f" (driver: {'CUDA ' + driver if driver != 'none' else 'none'})"
    devices = int(info.get("cuda_devices") or 0)
    if devices and info.get("cuda_problem"):
        return f"{built}; {devices} GPU{'s' if devices > 1 else ''} visible, unusable: see cuda_problem"
    if devices:
        return f"{built}; {devices} GPU{'s' if devices > 1 else ''} visible"
    if torch_cuda is None:
        return f"{built}; no GPU visible (torch {info.get('torch')} is a CPU-only build)"
    return f"{built}; no GPU visible"


#: keys the text form leaves out: the ``cuda`` line says them in words (``--json`` has them)
_TEXT_OMITS = ("cuda_devices",)


def format_info(info: dict[str, Any]) -> str:
    """``key  value`` lines, as ``fastopt info`` prints them."""
    shown = {k: v for k, v in info.items() if k not in _TEXT_OMITS}
    width = max(len(k) for k in shown)
    lines = []
    for key, value in shown.items():
        if isinstance(value, (list, tuple)):
            value = ", ".join(map(str, value)) or "none"
        lines.append(f"{key:<{width}}  {value}")
    return "\n".join(lines)


def info(file: Any = None) -> dict[str, Any]:
    """Print what fastopt was built with (as ``fastopt info`` does) and return it as a dict."""
    data = build_info()
    print(format_info(data), file=file or sys.stdout)
    return data
