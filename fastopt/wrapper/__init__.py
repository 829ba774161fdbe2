"""Optimizer wrappers: accumulation, clipping and mixed precision around an optimizer."""

from fastopt.wrapper.amp_optim_wrapper import AmpOptimWrapper
from fastopt.wrapper.grad_clip import GradClip
from fastopt.wrapper.optim_wrapper import OptimWrapper
from fastopt.wrapper.optim_wrapper_dict import OptimWrapperDict

__all__ = ["AmpOptimWrapper", "GradClip", "OptimWrapper", "OptimWrapperDict"]
