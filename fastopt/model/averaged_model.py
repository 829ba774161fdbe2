"""Averaged copies of a model (EMA, momentum-annealed EMA, SWA), registered in ``MODELS``.

``EMAHook`` builds one of these around the trained model. The copy's state dict has
``module.*`` keys and a ``steps`` counter, as MMEngine's, so EMA checkpoints move between the
two.
"""

from __future__ import annotations

import warnings
from copy import deepcopy
from typing import Any

import torch
from torch import Tensor, nn

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
            return self.module.state_dict(keep_vars=False)
        return dict(self.module.named_parameters())

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        """Update ``averaged_param`` in place towards ``source_param``."""
        raise NotImplementedError

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        """Fold the current parameters of ``model`` into the average."""
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        steps = int(self.steps)
        averaged = self._averaged()
        if steps == 0:
            for key, avg in averaged.items():
                avg.data.copy_(source[key].data)
        elif steps % self.interval == 0:
            for key, avg in averaged.items():
                if avg.dtype.is_floating_point:
                    self.avg_func(avg.data, source[key].data.to(avg.device), steps)
        if not self.update_buffers:
            for b_avg, b_src in zip(self.module.buffers(), model.buffers()):
                b_avg.data.copy_(b_src.data.to(b_avg.device))
        self.steps += 1


@MODELS.register_module()
class StochasticWeightAverage(BaseAveragedModel):
    """The running mean of the source's parameters (SWA)."""

    def avg_func(self, averaged_param: Tensor, source_param: Tensor, steps: int) -> None:
        averaged_param.add_(
            source_param - averaged_param, alpha=1.0 / float(steps // self.interval + 1)
        )


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
        momentum = max(self.momentum, self.gamma / (self.gamma + steps))
        averaged_param.lerp_(source_param, momentum)
