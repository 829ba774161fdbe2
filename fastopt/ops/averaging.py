"""The engine's view of an averaged model: all its averaged tensors updated in one pass.

An :class:`AveragingTable` is the owner of a plan (``fastopt.ops.plan``) as an optimizer is:
the averaged tensors are the params of its groups and each one's source tensor (the trained
model's param or buffer) is read in the grad slot (``csrc/core/ema.h``, op ``ema``). The plan
holds every tensor it points to and re-checks their addresses, sizes and dtypes each update;
a change rebuilds it.

:func:`engine_takes` says which (averaged, source) pairs the engine can take; the averaged
model updates the others one by one with torch (the per-tensor path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastopt import _ext
from fastopt.ops.plan import Plan, StateSpec, _is_plain_tensor, refreshed_plan
from fastopt.optim.precision import Precision

#: the op's modes and the codes of the mean's difference rounding (csrc/core/ema.h)
MODES = {"ema": 0, "mean": 1, "copy": 2}
_ROUND = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

AVERAGE, COPY = "average", "copy"  # a pair's role: averaged, or copied every update


def engine_takes(avg: torch.Tensor, src: torch.Tensor) -> bool:
    """Whether the engine can update ``avg`` from ``src``: plain dense tensors of one shape on
    one device that has an engine, ``avg`` float32/float16/bfloat16, ``src`` of its dtype or
    float32. Anything else (another device: MMEngine's ``device=`` option; another dtype; tensor
    subclasses; sparse tensors) takes the per-tensor path."""
    C = _ext._C
    if C is None or not (_is_plain_tensor(avg) and _is_plain_tensor(src)):
        return False
    if avg.layout != torch.strided or src.layout != torch.strided:
        return False
    if avg.dtype not in _ROUND or src.dtype not in (avg.dtype, torch.float32):
        return False
    if avg.device != src.device or avg.shape != src.shape:
        return False
    return C.engine_for(avg.device.type) is not None


class AveragingTable:
    """Averaged tensors updated from their sources in one engine call.

    Args:
        pairs: (averaged tensor, source tensor, role) for each tensor of the table; every pair
            must satisfy :func:`engine_takes`, all on one device, averaged tensors not sharing
            memory. Role ``"average"`` follows :meth:`update`'s mode, ``"copy"`` is always
            copied (buffers of a model averaged without ``update_buffers``).
    """

    _kind = "ema"  # the engine op (csrc/core/ops.h)

    def __init__(self, pairs: Sequence[tuple[torch.Tensor, torch.Tensor, str]]) -> None:
        self.precision = Precision()
        self.state: dict[Any, Any] = {}  # no per-tensor state (the plan checks it stays empty)
        rows: dict[tuple[str, torch.dtype], list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for avg, src, role in pairs:
            if role not in (AVERAGE, COPY):
                raise ValueError(f"AveragingTable: role must be {AVERAGE!r} or {COPY!r}")
            rows.setdefault((role, avg.dtype), []).append((avg, src))
        self.param_groups: list[dict[str, Any]] = []
        self._average_groups: list[dict[str, Any]] = []
        self.sources: list[torch.Tensor] = []
        for (role, dtype), items in rows.items():
            group = {
                "params": [a for a, _ in items],
                "lr": 1.0,
                "mode": MODES["copy"],
                "round": _ROUND[dtype],
            }
            self.param_groups.append(group)
            if role == AVERAGE:
                self._average_groups.append(group)
            self.sources += [s for _, s in items]
        self._plan: Plan | None = None
        self._graph_held: list[list[Any]] = []  # what graphs captured with dropped plans address

    def __len__(self) -> int:
        return len(self.sources)

    # what the plan builder reads of its owner (as of a FusedOptimizer)
    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        return StateSpec(())

    def _state_spec_all(self) -> StateSpec:
        return StateSpec(())

    def _state_dtype_for(self, p: torch.Tensor) -> torch.dtype:
        return torch.float32

    def update(self, mode: str, weight: float = 1.0) -> None:
        """One pass over the table: the ``"average"`` tensors by ``mode`` (``"ema"``:
        ``avg.lerp_(src, weight)``, ``"mean"``: ``avg.add_(src - avg, alpha=weight)``,
        ``"copy"``), the ``"copy"`` ones copied."""
        for group in self._average_groups:
            group["mode"] = MODES[mode]
            group["lr"] = float(weight)
        if not self.sources:
            return
        old = self._plan
        plan = self._plan = refreshed_plan(self, old, self.sources)
        if old is not None and plan is not old and old.device_use is not None:
            # as an optimizer's: a captured update keeps what its graph writes (ops/device.py)
            old.device_use.retire(self._graph_held, "AveragedModel")
        plan.engine.run(torch.get_num_threads(), stream=plan.stream())
        if plan.staged or plan.temporaries:
            with torch.no_grad():
                plan.finish()

    @property
    def backend(self) -> str | None:
        """The engine the last update ran on ("cpu", "cuda", "simt"), None before the first."""
        return None if self._plan is None else self._plan.engine.backend
