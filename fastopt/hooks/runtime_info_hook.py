"""``RuntimeInfoHook``: keeps the message hub's runtime facts and training scalars current."""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import fastopt
from fastopt.registry import HOOKS

from .finite_loss import FiniteLossCheck
from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


def _is_scalar(value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return value.numel() == 1
    if isinstance(value, np.ndarray):
        return value.size == 1
    return isinstance(value, (numbers.Number, np.number)) and not isinstance(value, bool)


@HOOKS.register_module()
class RuntimeInfoHook(Hook):
    """Writes ``epoch``, ``iter``, ``max_*``, ``loop_stage`` and the lr into the message hub.

    Also records every entry of the model's log variables as ``train/<name>`` and the metrics
    of validation/testing as ``val/<name>`` / ``test/<name>`` (scalars) or runtime info (other
    values). Components without a runner reference read these from the message hub.

    Args:
        check_finite: the first nan/inf ``loss*`` value of training is always logged as a
            warning naming the iteration (:mod:`fastopt.hooks.finite_loss`); True (default)
            then stops training with ``NonFiniteLossError``, False goes on.
    """

    priority = "VERY_HIGH"

    def __init__(self, check_finite: bool = True) -> None:
        self.finite_check = FiniteLossCheck(stop=check_finite)

    def before_run(self, runner: Runner) -> None:
        runner.message_hub.update_info_dict(
            dict(
                cfg=runner.cfg_text,
                seed=runner.seed,
                experiment_name=runner.experiment_name,
                fastopt_version=fastopt.__version__,
            )
        )
        self.last_loop_stage: str | None = None

    def before_train(self, runner: Runner) -> None:
        hub = runner.message_hub
        hub.update_info("loop_stage", "train")
        hub.update_info("epoch", runner.epoch)
        hub.update_info("iter", runner.iter)
        hub.update_info("max_epochs", runner.max_epochs)
        hub.update_info("max_iters", runner.max_iters)
        metainfo = getattr(runner.train_dataloader.dataset, "metainfo", None)
        if metainfo is not None:
            hub.update_info("dataset_meta", metainfo)

    def after_train(self, runner: Runner) -> None:
        self.finite_check.flush(runner)
        runner.message_hub.pop_info("loop_stage")

    def before_train_epoch(self, runner: Runner) -> None:
        self.finite_check.flush(runner)
        runner.message_hub.update_info("epoch", runner.epoch)

    def before_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: DATA_BATCH = None
    ) -> None:
        runner.message_hub.update_info("iter", runner.iter)
        lr_dict = runner.optim_wrapper.get_lr()
        if not isinstance(lr_dict, dict):
            raise TypeError(
                "`runner.optim_wrapper.get_lr()` should return a dict of learning rates, "
                f"but got {type(lr_dict).__name__}"
            )
        for name, lr in lr_dict.items():
            runner.message_hub.update_scalar(f"train/{name}", lr[0])

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        if outputs is not None:
            for key, value in outputs.items():
                runner.message_hub.update_scalar(f"train/{key}", value)
        self.finite_check.update(runner, outputs)

    def before_val(self, runner: Runner) -> None:
        self.finite_check.flush(runner)
        self.last_loop_stage = runner.message_hub.get_info("loop_stage")
        runner.message_hub.update_info("loop_stage", "val")

    def after_val_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        self._record_metrics(runner, "val", metrics)

    def after_val(self, runner: Runner) -> None:
        # validation inside training hands the stage back to training
        if getattr(self, "last_loop_stage", None) == "train":
            runner.message_hub.update_info("loop_stage", "train")
            self.last_loop_stage = None
        else:
            runner.message_hub.pop_info("loop_stage")

    def before_test(self, runner: Runner) -> None:
        runner.message_hub.update_info("loop_stage", "test")

    def after_test_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        self._record_metrics(runner, "test", metrics)

    def after_test(self, runner: Runner) -> None:
        runner.message_hub.pop_info("loop_stage")

    @staticmethod
    def _record_metrics(runner: Runner, mode: str, metrics: dict[str, Any] | None) -> None:
        if metrics is None:
            return
        for key, value in metrics.items():
            if _is_scalar(value):
                runner.message_hub.update_scalar(f"{mode}/{key}", value)
            else:
                runner.message_hub.update_info(f"{mode}/{key}", value)
