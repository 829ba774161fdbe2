"""``DistSamplerSeedHook``: tells the sampler which epoch starts, so each epoch reshuffles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastopt.dataset import loader_sampler
from fastopt.registry import HOOKS

from .hook import Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


@HOOKS.register_module()
class DistSamplerSeedHook(Hook):
    """Calls ``sampler.set_epoch(runner.epoch)`` before every training epoch.

    Without it a shuffling sampler whose order depends on the epoch (``DefaultSampler``,
    torch's ``DistributedSampler``) would repeat the first epoch's order.
    """

    priority = "NORMAL"

    def before_train_epoch(self, runner: Runner) -> None:
        sampler = loader_sampler(runner.train_loop.dataloader)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(runner.epoch)
