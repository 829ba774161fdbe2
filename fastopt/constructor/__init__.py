"""Optimizer wrapper constructors: param groups from ``paramwise_cfg``, layer-wise lr decay."""

from .builder import build_optim_wrapper
from .default_constructor import DefaultOptimWrapperConstructor
from .layer_decay_constructor import LearningRateDecayOptimWrapperConstructor
from .layer_depth import infer_get_layer_depth

__all__ = [
    "DefaultOptimWrapperConstructor",
    "LearningRateDecayOptimWrapperConstructor",
    "build_optim_wrapper",
    "infer_get_layer_depth",
]
