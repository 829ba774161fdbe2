"""What the compiled engine declares about its ops and codes, read from ``fastopt._C``.

The op list in ``csrc/core/ops.h`` is the one place that names each op's hyperparameter keys,
its state keys (in engine order), whether the engine counts a per-param step and which
per-tensor reductions it runs; ``_C.catalog()`` exports it together with the dtype, layout and
norm-type codes and the chunk sizes. Python reads them here instead of repeating them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

import torch

from fastopt._ext import require_C

#: the state key of each param mode's per-param buffer (fastopt.optim.precision)
MODE_STATE_KEYS = {"master": "master_param", "kahan": "kahan_comp"}


@dataclass(frozen=True)
class OpInfo:
    """One op of the engine's op list."""

    name: str
    #: group keys the engine reads: ``key``, ``key.N`` (item N), a trailing ``?`` (optional,
    #: 0 when absent) and/or ``!`` (a change of truthiness rebuilds the table)
    hyper_keys: tuple[str, ...]
    #: torch-style state names, in the order of the engine's state slots
    state_keys: tuple[str, ...]
    #: the engine counts a per-param float32 ``step`` state
    has_step: bool
    #: per-tensor reductions of its reduction pass: param_norm, grad_norm, direction_norm
    reductions: tuple[str, ...]
    #: states that are never negative: 8-bit states quantize them with the unsigned map
    unsigned_states: tuple[str, ...] = ()

    def group_keys(self) -> dict[str, bool]:
        """Each group key the op reads, and whether a group must have it."""
        keys: dict[str, bool] = {}
        for spec in self.hyper_keys:
            name = spec.rstrip("?!")
            keys[name.split(".")[0]] = "?" not in spec
        return keys

    def slot(self, state: str) -> int:
        """The engine's slot of a state name."""
        return self.state_keys.index(state)


@cache
def _catalog() -> dict[str, Any]:
    return require_C().catalog()


def ops() -> dict[str, OpInfo]:
    """Every op the engine runs, by name."""
    return {name: _op_info(name) for name in _catalog()["ops"]}


@cache
def _op_info(name: str) -> OpInfo:
    try:
        rec = _catalog()["ops"][name]
    except KeyError:
        known = ", ".join(_catalog()["ops"])
        raise KeyError(f"the engine has no op {name!r}; it has {known}") from None
    return OpInfo(
        name=rec["name"],
        hyper_keys=tuple(rec["hyper_keys"]),
        state_keys=tuple(rec["state_keys"]),
        has_step=bool(rec["has_step"]),
        reductions=tuple(rec["reductions"]),
        unsigned_states=tuple(rec["unsigned_states"]),
    )


def op(name: str) -> OpInfo:
    """The op of that name (a KeyError lists the known ones)."""
    return _op_info(name)


@cache
def dtype_codes() -> dict[torch.dtype, int]:
    """The element types the engines update, and their codes."""
    return {getattr(torch, name): code for name, code in _catalog()["dtypes"].items()}


def layout(name: str) -> int:
    """The code of a memory layout: contiguous, dense or staged (see csrc/plan.h)."""
    return _catalog()["layouts"][name]


def norm_type(name: str) -> int:
    """The code of a norm type: l2, l1, inf or p."""
    return _catalog()["norm_types"][name]


def max_states() -> int:
    """State slots per tensor in the engine's table."""
    return _catalog()["max_states"]


def chunk_elems(engine: str) -> int:
    """The default chunk size, in elements, of the cpu or cuda engine."""
    return _catalog()[f"{engine}_chunk_elems"]


def param_mode(name: str) -> int:
    """The code of a param mode: nearest, master, kahan or stochastic (csrc/core/precision.h)."""
    return _catalog()["param_modes"][name]


def rounding_keys() -> tuple[str, str]:
    """The group keys of stochastic rounding: its seed and its step count."""
    seed, step = (k.rstrip("?") for k in _catalog()["rounding_keys"])
    return seed, step


def quant_block() -> int:
    """Elements per block of 8-bit states (one float32 absmax each; csrc/core/quant8.h)."""
    return _catalog()["quant"]["block"]


def quant_min_elems() -> int:
    """Tensors with fewer elements (globally) keep float32 states under ``state_dtype='8bit'``."""
    return _catalog()["quant"]["min_elems"]


def quant_state_code() -> int:
    """The engine's state dtype code of 8-bit states."""
    return _catalog()["quant"]["state_dtype"]


def quant_map(signed: bool) -> tuple[float, ...]:
    """The 256 values of the signed (first moments) or unsigned (second moments) dynamic map."""
    return tuple(_catalog()["quant"]["signed_map" if signed else "unsigned_map"])
