"""``EmptyCacheHook``: release cached GPU memory at chosen points."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from fastopt.registry import HOOKS

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


@HOOKS.register_module()
class EmptyCacheHook(Hook):
    """Calls ``torch.cuda.empty_cache()`` before/after epochs or after iterations (of every
    phase). Does nothing without CUDA.

    Args:
        before_epoch: before each epoch.
        after_epoch: after each epoch.
        after_iter: after each iteration.
    """

    priority = "NORMAL"

    def __init__(
        self, before_epoch: bool = False, after_epoch: bool = True, after_iter: bool = False
    ) -> None:
        self._do_before_epoch = before_epoch
        self._do_after_epoch = after_epoch
        self._do_after_iter = after_iter
        self.calls = 0  # how many times the cache was emptied (observable in tests and logs)

    def _empty(self) -> None:
        self.calls += 1
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _after_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | dict | None = None,
        mode: str = "train",
    ) -> None:
        if self._do_after_iter:
            self._empty()

    def _before_epoch(self, runner: Runner, mode: str = "train") -> None:
        if self._do_before_epoch:
            self._empty()

    def _after_epoch(self, runner: Runner, mode: str = "train") -> None:
        if self._do_after_epoch:
            self._empty()
