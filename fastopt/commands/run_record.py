"""``RunRecord``: the hook through which a command learns what its run did.

A module of its own so that :mod:`fastopt.commands.common` imports without torch (the hooks
need it).
"""

from __future__ import annotations

from typing import Any

from fastopt.hooks import Hook


class RunRecord(Hook):
    """The metrics of the last validation and test, the training iterations this process
    ran, and whether the run is between loading its checkpoint and training.

    HIGHEST priority: an iteration counts as run, and a checkpoint as being restored, before
    any other hook of that stage runs (and may fail).
    """

    priority = "HIGHEST"

    def __init__(self) -> None:
        self.last_metrics: dict[str, dict[str, Any]] = {}
        self.iterations_run = 0  # a failed start has none
        self.restoring = False  # after_load_checkpoint seen, training not yet started
        self.training_started = False

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:
        self.restoring = True

    def before_train(self, runner: Any) -> None:
        self.restoring = False
        self.training_started = True

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        self.iterations_run += 1

    def after_val_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        self.last_metrics["val"] = dict(metrics or {})

    def after_test_epoch(self, runner: Any, metrics: dict | None = None) -> None:
        self.last_metrics["test"] = dict(metrics or {})
