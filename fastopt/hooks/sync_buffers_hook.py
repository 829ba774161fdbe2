"""``SyncBuffersHook``: average the model's buffers (e.g. BN statistics) over ranks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastopt.dist import all_reduce_mean, is_distributed
from fastopt.registry import HOOKS

from .hook import Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


@HOOKS.register_module()
class SyncBuffersHook(Hook):
    """After each training epoch (and before validation when no epoch ended since the last
    sync, as in iteration-based training), replace every floating buffer by its mean over
    ranks. Does nothing in a single process."""

    priority = "NORMAL"

    def __init__(self) -> None:
        self.called_in_train = False

    def before_val_epoch(self, runner: Runner) -> None:
        if is_distributed() and not self.called_in_train:
            all_reduce_mean(runner.model.buffers())
        self.called_in_train = False

    def after_train_epoch(self, runner: Runner) -> None:
        if is_distributed():
            all_reduce_mean(runner.model.buffers())
            self.called_in_train = True
