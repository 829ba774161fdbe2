"""Train, validation and test loops (registered in ``LOOPS`` under MMEngine's names)."""

from .base_loop import BaseLoop, calc_dynamic_intervals
from .eval_loops import TestLoop, ValLoop
from .train_loops import EpochBasedTrainLoop, IterBasedTrainLoop

__all__ = [
    "BaseLoop",
    "EpochBasedTrainLoop",
    "IterBasedTrainLoop",
    "TestLoop",
    "ValLoop",
    "calc_dynamic_intervals",
]
