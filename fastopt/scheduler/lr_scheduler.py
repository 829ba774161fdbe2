"""Learning-rate schedulers: the generic schedulers with ``param_name='lr'``."""

from __future__ import annotations

from typing import Any

from fastopt.registry import PARAM_SCHEDULERS

from ._mixin import publish_signature
from .base import HasParamGroups
from .param_scheduler import (
    ConstantParamScheduler,
    CosineAnnealingParamScheduler,
    CosineRestartParamScheduler,
    ExponentialParamScheduler,
    LinearParamScheduler,
    MultiStepParamScheduler,
    OneCycleParamScheduler,
    PolyParamScheduler,
    StepParamScheduler,
)
from .plateau import ReduceOnPlateauParamScheduler


class LRSchedulerMixin:
    """Schedules ``group['lr']``; see the generic class for the schedule itself."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        publish_signature(cls)

    def __init__(self, optimizer: HasParamGroups, *args: Any, **kwargs: Any) -> None:
        super().__init__(optimizer, "lr", *args, **kwargs)  # type: ignore[call-arg]


@PARAM_SCHEDULERS.register_module()
class ConstantLR(LRSchedulerMixin, ConstantParamScheduler):
    """Scale the lr by ``factor`` until one step before ``end`` (ConstantParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingLR(LRSchedulerMixin, CosineAnnealingParamScheduler):
    """Cosine-anneal the lr to ``eta_min`` over ``T_max`` (CosineAnnealingParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class CosineRestartLR(LRSchedulerMixin, CosineRestartParamScheduler):
    """Cosine annealing of the lr with warm restarts (CosineRestartParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class ExponentialLR(LRSchedulerMixin, ExponentialParamScheduler):
    """Multiply the lr by ``gamma`` every step (ExponentialParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class LinearLR(LRSchedulerMixin, LinearParamScheduler):
    """Linear lr factor from ``start_factor`` to ``end_factor``: the usual warm-up."""


@PARAM_SCHEDULERS.register_module()
class MultiStepLR(LRSchedulerMixin, MultiStepParamScheduler):
    """Multiply the lr by ``gamma`` at each milestone (MultiStepParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class OneCycleLR(LRSchedulerMixin, OneCycleParamScheduler):
    """The 1cycle learning-rate policy (OneCycleParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class PolyLR(LRSchedulerMixin, PolyParamScheduler):
    """Polynomial lr decay to ``eta_min`` (PolyParamScheduler)."""


@PARAM_SCHEDULERS.register_module()
class ReduceOnPlateauLR(LRSchedulerMixin, ReduceOnPlateauParamScheduler):
    """Reduce the lr when the monitored metric stops improving."""


@PARAM_SCHEDULERS.register_module()
class StepLR(LRSchedulerMixin, StepParamScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps (StepParamScheduler)."""
