"""Samplers, collate functions, the dataloader builder, and a synthetic dataset."""

from .builder import build_dataloader, loader_sampler, set_start_batch, worker_init_fn
from .collate import default_collate, pseudo_collate
from .sampler import DefaultSampler, InfiniteSampler
from .synthetic import SyntheticShapes

__all__ = [
    "DefaultSampler",
    "InfiniteSampler",
    "SyntheticShapes",
    "build_dataloader",
    "default_collate",
    "loader_sampler",
    "pseudo_collate",
    "set_start_batch",
    "worker_init_fn",
]
