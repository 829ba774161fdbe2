"""Averaged copies of a model (EMA, momentum-annealed EMA, SWA), registered in ``MODELS``.

``EMAHook`` builds one of these around the trained model. The copy's state dict has
``module.*`` keys and a ``steps`` counter, as MMEngine's, so EMA checkpoints move between the
two.
"""

from __future__ import annotations

import operator
import warnings
from collections import Counter
from copy import deepcopy
from itertools import chain
from typing import Any

import torch
from torch import Tensor, nn

from fastopt.ops.averaging import AVERAGE, COPY, AveragingTable, engine_takes
from fastopt.registry import MODELS


class BaseAveragedModel(nn.Module):
    """A frozen deep copy of ``model`` whose parameters track an average of the source's.

    Args:
        model: the model to average.
        interval: average every ``interval`` calls of :meth:`update_parameters`.
        device: where to keep the copy (default: where the source is).
        update_buffers: average the buffers too; otherwise they are copied from the source.
    """

    def __init__(
        self,
        model: nn.Module,
        interval: int = 1,
        device: torch.device | str | None = None,
        update_buffers: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(interval, int) or interval < 1:
            raise ValueError(f"interval must be a positive int, but got {interval!r}")
        self.module = deepcopy(model).requires_grad_(False)
        self.interval = interval
        if device is not None:
            self.module = self.module.to(device)
        self.register_buffer("steps", torch.tensor(0, dtype=torch.long, device=device))
        self.update_buffers = update_buffers

    def _averaged(self) -> dict[str, Tensor]:
        if self.update_buffers:
            return self.module.state_dict(keep_vars=True)
        return dict(self.module.named_parameters())

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        """Update ``averaged_param`` in place towards ``source_param``."""
        raise NotImplementedError

    def fused_avg(self, steps: int) -> tuple[str, float]:
        """What :meth:`avg_func` does at ``steps``, as the engine's averaging mode and weight
        (``"ema"``: ``lerp_(src, weight)``; ``"mean"``: ``add_(src - avg, alpha=weight)``).

        A class that defines it updates its tensors in one engine pass; one that overrides
        :meth:`avg_func` without it updates them one by one.
        """
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        # the engine's tables are rebuilt on demand: copies and pickles go without them
        state = self.__dict__.copy()
        state.pop("_tables", None)
        return state

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Fold the current parameters of ``model`` into the average.

        MMEngine's semantics: the first call copies the source; later calls average every
        ``interval``-th call (floating tensors only); buffers are copied every call unless
        ``update_buffers``. The tensors the engine takes are updated in one pass over all of
        them (:mod:`fastopt.ops.averaging`), the others with torch one by one.
        """
        steps = int(self.steps)
        averaging = steps == 0 or steps % self.interval == 0
        mode, weight = "copy", 1.0
        if steps > 0 and averaging and self._fused:
            mode, weight = self.fused_avg(steps)
        tables = self._tables_for(model)
        try:
            (tables.full if averaging else tables.copies).update(mode, weight)
        except (RuntimeError, TypeError, ValueError):
            # a tensor moved to another device or dtype since the tables were built (the
            # update checks before it writes): sort the tensors again
            tables = self._tables_for(model, rebuild=True)
            (tables.full if averaging else tables.copies).update(mode, weight)
        if steps == 0:
            for avg, src in chain(tables.loop_average, tables.non_floating):
                avg.data.copy_(src.data)
        elif averaging:
            for avg, src in tables.loop_average:
                self.avg_func(avg.data, src.data.to(avg.device), steps)
        for b_avg, b_src in tables.loop_buffers:
            b_avg.data.copy_(b_src.data.to(b_avg.device))
        self.steps += 1

    @property
    def _fused(self) -> bool:
        """This class's avg_func is the one its fused_avg describes."""
        cls = type(self)
        owner = next(c for c in cls.__mro__ if "fused_avg" in vars(c))
        return owner is not BaseAveragedModel and cls.avg_func is owner.avg_func

    def _tables_for(self, model: nn.Module, rebuild: bool = False) -> _Tables:
        """The averaging tables of (this copy, ``model``); new when a tensor on either side is
        another object than when they were built."""
        if self.update_buffers:
            source = model.state_dict(keep_vars=True)
        else:
            source = dict(model.named_parameters())
        averaged = self._averaged()
        pairs = [(avg, source[k]) for k, avg in averaged.items()]
        buffers = [] if self.update_buffers else list(zip(self.module.buffers(), model.buffers()))
        key = [t for pair in chain(pairs, buffers) for t in pair]
        cached: _Tables | None = self.__dict__.get("_tables")
        if not rebuild and cached is not None and _same(cached.key, key):
            return cached
        tables = _Tables(key, pairs, buffers, self._fused)
        self.__dict__["_tables"] = tables  # a plain attribute: not a submodule, not state
        return tables


def _same(a: list[Tensor], b: list[Tensor]) -> bool:
    return len(a) == len(b) and all(map(operator.is_, a, b))


class _Tables:
    """An averaged model's tensors sorted for one update: the engine's tables and the pairs
    left to the per-tensor path."""

    def __init__(
        self,
        key: list[Tensor],
        pairs: list[tuple[Tensor, Tensor]],
        buffers: list[tuple[Tensor, Tensor]],
        fused: bool,
    ) -> None:
        self.key = key
        floating = [(a, s) for a, s in pairs if a.dtype.is_floating_point]
        self.non_floating = [(a, s) for a, s in pairs if not a.dtype.is_floating_point]
        # a custom avg_func (no fused_avg) averages one by one, its first copy too
        engine = _engine_pairs((floating if fused else []) + buffers)
        self.loop_average = [p for p in floating if id(p[0]) not in engine]
        self.loop_buffers = [p for p in buffers if id(p[0]) not in engine]
        copies = [(a, s, COPY) for a, s in buffers if id(a) in engine]
        average = [(a, s, AVERAGE) for a, s in floating if id(a) in engine]
        self.full = AveragingTable(average + copies)  # an averaging call
        self.copies = AveragingTable(copies)  # a call between two averaging ones


def _engine_pairs(pairs: list[tuple[Tensor, Tensor]]) -> set[int]:
    """ids of the averaged tensors of ``pairs`` the engine updates: those it takes, on the
    device of the first of them, whose storage no other averaged tensor shares (tied weights
    listed twice in a state dict are averaged twice, as MMEngine does, one by one)."""
    taken = [(a, s) for a, s in pairs if engine_takes(a, s)]
    if not taken:
        return set()
    device = taken[0][0].device
    taken = [(a, s) for a, s in taken if a.device == device]
    storages = Counter(a.untyped_storage().data_ptr() for a, _ in taken if a.numel())
    return {
        id(a) for a, _ in taken if not a.numel() or storages[a.untyped_storage().data_ptr()] == 1
    }


@MODELS.register_module()
class StochasticWeightAverage(BaseAveragedModel):
    """The running mean of the source's parameters (SWA)."""

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        averaged_param.add_(source_param - averaged_param, alpha=self._alpha(steps))

    def fused_avg(self, steps: int) -> tuple[str, float]:
        return "mean", self._alpha(steps)

    def _alpha(self, steps: int) -> float:
        return 1 / float(steps // self.interval + 1)


@MODELS.register_module()
class ExponentialMovingAverage(BaseAveragedModel):
    """``avg = (1 - momentum) * avg + momentum * source`` (``momentum`` in (0, 1), small)."""

    def __init__(
        self,
        model: nn.Module,
        momentum: float = 0.0002,
        interval: int = 1,
        device: torch.device | str | None = None,
        update_buffers: bool = False,
    ) -> None:
        super().__init__(model, interval, device, update_buffers)
        if not 0.0 < momentum < 1.0:
            raise ValueError(f"momentum must be in range (0.0, 1.0), but got {momentum}")
        if momentum > 0.5:
            warnings.warn(
                f"EMA momentum is usually small (the weight of the new value), got {momentum}: "
                "make sure it is not 1 - momentum",
                stacklevel=2,
            )
        self.momentum = momentum

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        averaged_param.lerp_(source_param, self.momentum)

    def fused_avg(self, steps: int) -> tuple[str, float]:
        return "ema", self.momentum


@MODELS.register_module()
class MomentumAnnealingEMA(ExponentialMovingAverage):
    """EMA whose momentum starts large: ``max(momentum, gamma / (gamma + steps))``."""

    def __init__(
        self,
        model: nn.Module,
        momentum: float = 0.0002,
        gamma: int = 100,
        interval: int = 1,
        device: torch.device | str | None = None,
        update_buffers: bool = False,
    ) -> None:
        super().__init__(model, momentum, interval, device, update_buffers)
        if gamma <= 0:
            raise ValueError(f"gamma must be greater than 0, but got {gamma}")
        self.gamma = gamma

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        averaged_param.lerp_(source_param, self._momentum(steps))

    def fused_avg(self, steps: int) -> tuple[str, float]:
        return "ema", self._momentum(steps)

    def _momentum(self, steps: int) -> float:
        return max(self.momentum, self.gamma / (self.gamma + steps))
