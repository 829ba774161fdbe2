"""``IterTimerHook``: per-iteration ``time``/``data_time`` and the ETA."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from fastopt.registry import HOOKS

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


@HOOKS.register_module()
class IterTimerHook(Hook):
    """Records ``<mode>/data_time`` (waiting for the batch) and ``<mode>/time`` (the whole
    iteration) and the ETA in seconds (runtime info ``eta``)."""

    priority = "NORMAL"

    def __init__(self) -> None:
        self.time_sec_tot = 0.0
        self.start_iter = 0
        self.t = time.time()

    def before_train(self, runner: Runner) -> None:
        self.start_iter = runner.iter
        self.time_sec_tot = 0.0

    def _before_epoch(self, runner: Runner, mode: str = "train") -> None:
        self.t = time.time()

    def _before_iter(
        self, runner: Runner, batch_idx: int, data_batch: DATA_BATCH = None, mode: str = "train"
    ) -> None:
        runner.message_hub.update_scalar(f"{mode}/data_time", time.time() - self.t)

    def _after_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | dict | None = None,
        mode: str = "train",
    ) -> None:
        now = time.time()
        iter_time = now - self.t
        runner.message_hub.update_scalar(f"{mode}/time", iter_time)
        self.t = now
        if mode == "train":
            self.time_sec_tot += iter_time
            avg = self.time_sec_tot / (runner.iter - self.start_iter + 1)
            eta = avg * (runner.max_iters - runner.iter - 1)
        else:
            loader = runner.val_dataloader if mode == "val" else runner.test_dataloader
            eta = runner.message_hub.get_scalar(f"{mode}/time").mean() * (
                len(loader) - batch_idx - 1
            )
        runner.message_hub.update_info("eta", eta)
