"""Samplers, collate functions and the dataloader builder used by the runner."""

from .builder import build_dataloader, loader_sampler, set_start_batch, worker_init_fn
from .collate import default_collate, pseudo_collate
from .sampler import DefaultSampler, InfiniteSampler

__all__ = [
    "DefaultSampler",
    "InfiniteSampler",
    "build_dataloader",
    "default_collate",
    "loader_sampler",
    "pseudo_collate",
    "set_start_batch",
    "worker_init_fn",
]
