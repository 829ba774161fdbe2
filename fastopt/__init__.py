"""fastopt: fused multi-tensor optimizer steps for PyTorch, configurable the MMEngine way.

Public names are imported lazily so that ``import fastopt`` stays cheap and works even when
the compiled extension is missing (using a fused optimizer then raises a clear error).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from fastopt.catalog import CATALOG

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # fused optimizers: added from fastopt.catalog below
    # optimizer wrappers
    "OptimWrapper": "fastopt.wrapper",
    "AmpOptimWrapper": "fastopt.wrapper",
    "OptimWrapperDict": "fastopt.wrapper",
    # registry / config / constructors
    "Registry": "fastopt.registry",
    "Config": "fastopt.config",
    "DefaultOptimWrapperConstructor": "fastopt.constructor",
    "LearningRateDecayOptimWrapperConstructor": "fastopt.constructor",
    "build_optim_wrapper": "fastopt.constructor",
    # runner
    "Runner": "fastopt.runner",
    # introspection
    "info": "fastopt._ext",
}

_EXPORTS.update({entry.name: "fastopt.optim" for entry in CATALOG})

__all__ = sorted(_EXPORTS) + ["__version__"]


def _subpackages() -> list[str]:
    """The public submodules (``registry``, ``config``, ...), found in the package itself."""
    return [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        # `fastopt.registry.OPTIMIZERS` after a plain `import fastopt`, as the README writes it
        if name in _subpackages():
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'fastopt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_subpackages()))
