"""Fused optimizers: every param of every group updated in one engine call."""

from fastopt.optim.adam import FusedAdam, FusedAdamW
from fastopt.optim.base import FusedOptimizer
from fastopt.optim.lars import FusedLARS
from fastopt.optim.sgd import FusedSGD

__all__ = ["FusedAdam", "FusedAdamW", "FusedLARS", "FusedOptimizer", "FusedSGD"]
