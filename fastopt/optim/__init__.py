"""Fused optimizers: every param of every group updated in one engine call.

The list of them, with what each follows and is tested and benchmarked against, is
:mod:`fastopt.catalog`.
"""

from fastopt.ops.quant8 import dequantize_state_dict
from fastopt.optim.adagrad import FusedAdagrad
from fastopt.optim.adam import FusedAdam, FusedAdamW
from fastopt.optim.adan import FusedAdan
from fastopt.optim.base import FusedOptimizer
from fastopt.optim.lamb import FusedLAMB
from fastopt.optim.lars import FusedLARS
from fastopt.optim.lion import FusedLion
from fastopt.optim.rmsprop import FusedRMSprop
from fastopt.optim.sgd import FusedSGD

__all__ = [
    "FusedAdagrad",
    "FusedAdam",
    "FusedAdamW",
    "FusedAdan",
    "FusedLAMB",
    "FusedLARS",
    "FusedLion",
    "FusedOptimizer",
    "FusedRMSprop",
    "FusedSGD",
    "dequantize_state_dict",
]
