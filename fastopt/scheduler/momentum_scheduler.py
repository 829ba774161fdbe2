"""Momentum schedulers: ``momentum`` for SGD-style optimizers, ``betas[0]`` for Adam-style.

For an optimizer whose defaults have ``betas`` but no ``momentum`` (Adam, AdamW, fused
Adam...), each group gets a ``momentum`` entry mirroring ``betas[0]``; it is the value that
is scheduled, and after every step it is written back as ``betas = (momentum, betas[1])``.
This is MMEngine's scheme, so checkpoints and logs (which read ``momentum``) agree.
"""

from __future__ import annotations

from typing import Any

from fastopt.registry import PARAM_SCHEDULERS

from ._mixin import publish_signature
from .base import HasParamGroups, optimizer_defaults
from .param_scheduler import (
    ConstantParamScheduler,
    CosineAnnealingParamScheduler,
    CosineRestartParamScheduler,
    ExponentialParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    PolyParamScheduler,
    StepParamScheduler,
)
from .plateau import ReduceOnPlateauParamScheduler


class MomentumSchedulerMixin:
    """Schedules ``momentum`` (or ``betas[0]``, mirrored in ``momentum``)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        publish_signature(cls)

    def __init__(self, optimizer: HasParamGroups, *args: Any, **kwargs: Any) -> None:
        if not hasattr(optimizer, "param_groups"):
            raise TypeError(
                f"{type(self).__name__}: optimizer should be a torch.optim.Optimizer, an "
                f"OptimWrapper or an object with param_groups, but got {type(optimizer).__name__}"
            )
        defaults = optimizer_defaults(optimizer)
        self.use_betas = False
        if "momentum" not in defaults:
            if "betas" not in defaults:
                inner = getattr(optimizer, "optimizer", optimizer)
                raise ValueError(
                    f"{type(self).__name__}: optimizer must support momentum when using a "
                    f"momentum scheduler, but {type(inner).__name__} has neither 'momentum' "
                    f"nor 'betas' (its settings: {sorted(k for k in defaults if k != 'params')})"
                )
            self.use_betas = True
            for group in optimizer.param_groups:
                group["momentum"] = group["betas"][0]
        super().__init__(optimizer, "momentum", *args, **kwargs)  # type: ignore[call-arg]

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Step the schedule, then copy ``momentum`` back into ``betas[0]`` if needed."""
        super().step(*args, **kwargs)  # type: ignore[misc]
        if self.use_betas:
            for group in self.optimizer.param_groups:  # type: ignore[attr-defined]
                group["betas"] = (group["momentum"], group["betas"][1])


@PARAM_SCHEDULERS.register_module()
class ConstantMomentum(MomentumSchedulerMixin, ConstantParamScheduler):
    """Scale the momentum by ``factor`` until one step before ``end``."""


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingMomentum(MomentumSchedulerMixin, CosineAnnealingParamScheduler):
    """Cosine-anneal the momentum to ``eta_min`` over ``T_max``."""


@PARAM_SCHEDULERS.register_module()
class CosineRestartMomentum(MomentumSchedulerMixin, CosineRestartParamScheduler):
    """Cosine annealing of the momentum with warm restarts."""


@PARAM_SCHEDULERS.register_module()
class ExponentialMomentum(MomentumSchedulerMixin, ExponentialParamScheduler):
    """Multiply the momentum by ``gamma`` every step."""


@PARAM_SCHEDULERS.register_module()
class LinearMomentum(MomentumSchedulerMixin, LinearParamScheduler):
    """Linear momentum factor from ``start_factor`` to ``end_factor``."""


@PARAM_SCHEDULERS.register_module()
class MultiStepMomentum(MomentumSchedulerMixin, MultiStepParamScheduler):
    """Multiply the momentum by ``gamma`` at each milestone."""


@PARAM_SCHEDULERS.register_module()
class PolyMomentum(MomentumSchedulerMixin, PolyParamScheduler):
    """Polynomial momentum decay to ``eta_min``."""


@PARAM_SCHEDULERS.register_module()
class ReduceOnPlateauMomentum(MomentumSchedulerMixin, ReduceOnPlateauParamScheduler):
    """Reduce the momentum when the monitored metric stops improving."""


@PARAM_SCHEDULERS.register_module()
class StepMomentum(MomentumSchedulerMixin, StepParamScheduler):
    """Multiply the momentum by ``gamma`` every ``step_size`` steps."""
