"""``EMAHook``: keep an averaged copy of the model; validate, test and save with it."""

from __future__ import annotations

import copy
import logging
from itertools import chain
from typing import TYPE_CHECKING, Any

from fastopt.fileio.checkpoint import load_model_state
from fastopt.model.utils import unwrap_model
from fastopt.registry import HOOKS, MODELS

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner

logger = logging.getLogger(__name__)


@HOOKS.register_module()
class EMAHook(Hook):
    """Exponential moving average of the parameters (MMEngine's ``EMAHook``).

    Args:
        ema_type: an averaged-model type from ``MODELS`` (``ExponentialMovingAverage``,
            ``MomentumAnnealingEMA``, ``StochasticWeightAverage``).
        strict_load: load EMA weights strictly (missing/unexpected keys raise).
        begin_iter: start averaging at this iteration (before it the copy follows the model).
        begin_epoch: start averaging at this epoch (not together with ``begin_iter``).
        **kwargs: arguments of the averaged model (``momentum``, ``interval``,
            ``update_buffers``, ...).

    Validation and testing run with the averaged weights (swapped in and out). A checkpoint
    stores the averaged weights in ``state_dict`` (ready for deployment) and the raw ones in
    ``ema_state_dict``; resuming swaps them back.
    """

    priority = "NORMAL"

    def __init__(
        self,
        ema_type: str = "ExponentialMovingAverage",
        strict_load: bool = False,
        begin_iter: int = 0,
        begin_epoch: int = 0,
        **kwargs: Any,
    ) -> None:
        if begin_iter != 0 and begin_epoch != 0:
            raise ValueError("`begin_iter` and `begin_epoch` should not be both set.")
        if begin_iter < 0:
            raise ValueError(f"`begin_iter` must not be less than 0, but got {begin_iter}")
        if begin_epoch < 0:
            raise ValueError(f"`begin_epoch` must not be less than 0, but got {begin_epoch}")
        self.strict_load = strict_load
        self.ema_cfg = dict(type=ema_type, **kwargs)
        self.begin_iter = begin_iter
        self.begin_epoch = begin_epoch
        self.enabled_by_epoch = begin_epoch > 0

    def before_run(self, runner: Runner) -> None:
        self.src_model = unwrap_model(runner.model)
        self.ema_model = MODELS.build(self.ema_cfg, default_args=dict(model=self.src_model))

    def before_train(self, runner: Runner) -> None:
        if self.enabled_by_epoch and self.begin_epoch > runner.max_epochs:
            raise ValueError(
                f"self.begin_epoch ({self.begin_epoch}) is larger than max_epochs "
                f"({runner.max_epochs})"
            )
        if not self.enabled_by_epoch and self.begin_iter > runner.max_iters:
            raise ValueError(
                f"self.begin_iter ({self.begin_iter}) is larger than max_iters ({runner.max_iters})"
            )

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        if self._ema_started(runner):
            self.ema_model.update_parameters(self.src_model)
        else:
            source = self.src_model.state_dict()
            for key, value in self.ema_model.module.state_dict().items():
                value.data.copy_(source[key].data)

    def before_val_epoch(self, runner: Runner) -> None:
        self._swap_ema_parameters()

    def after_val_epoch(self, runner: Runner, metrics: dict | None = None) -> None:
        self._swap_ema_parameters()

    def before_test_epoch(self, runner: Runner) -> None:
        self._swap_ema_parameters()

    def after_test_epoch(self, runner: Runner, metrics: dict | None = None) -> None:
        self._swap_ema_parameters()

    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        checkpoint["ema_state_dict"] = self.ema_model.state_dict()
        # swap dict entries (not the model's tensors): state_dict gets the averaged weights
        self._swap_ema_state_dict(checkpoint)

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        if "ema_state_dict" in checkpoint and runner.resuming:
            self._swap_ema_state_dict(checkpoint)  # state_dict holds the raw weights again
            load_model_state(
                self.ema_model,
                checkpoint["ema_state_dict"],
                strict=self.strict_load,
                log=runner.logger,
            )
            return
        if runner.resuming:
            runner.logger.warning(
                "There is no `ema_state_dict` in checkpoint. `EMAHook` will make a copy of "
                "`state_dict` as the initial `ema_state_dict`"
            )
        load_model_state(
            self.ema_model.module,
            copy.deepcopy(checkpoint["state_dict"]),
            strict=self.strict_load,
            log=runner.logger,
        )

    def _swap_ema_parameters(self) -> None:
        if self.ema_model.update_buffers:
            averaged = chain(self.ema_model.module.parameters(), self.ema_model.module.buffers())
            source = chain(self.src_model.parameters(), self.src_model.buffers())
        else:
            averaged = self.ema_model.module.parameters()
            source = self.src_model.parameters()
        for p_avg, p_src in zip(averaged, source):
            tmp = p_avg.data.clone()
            p_avg.data.copy_(p_src.data)
            p_src.data.copy_(tmp)

    @staticmethod
    def _swap_ema_state_dict(checkpoint: dict) -> None:
        model_state = checkpoint["state_dict"]
        ema_state = checkpoint["ema_state_dict"]
        for key in ema_state:
            # keys missing from the model's state dict (a renamed layer) are left alone
            if key.startswith("module.") and key[7:] in model_state:
                ema_state[key], model_state[key[7:]] = model_state[key[7:]], ema_state[key]

    def _ema_started(self, runner: Runner) -> bool:
        if self.enabled_by_epoch:
            return runner.epoch + 1 >= self.begin_epoch
        return runner.iter + 1 >= self.begin_iter
