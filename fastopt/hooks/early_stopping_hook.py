"""``EarlyStoppingHook``: stop training when a validation metric stops improving."""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from fastopt.registry import HOOKS

from .checkpoint_hook import DEFAULT_GREATER_KEYS, DEFAULT_LESS_KEYS, infer_rule
from .hook import Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner

_COMPARE = {"greater": lambda x, y: x > y, "less": lambda x, y: x < y}


@HOOKS.register_module()
class EarlyStoppingHook(Hook):
    """Sets ``runner.train_loop.stop_training`` (MMEngine's rules and defaults).

    Args:
        monitor: the metric to watch.
        rule: ``'greater'`` or ``'less'`` is better; None infers it from the name.
        min_delta: smallest change that counts as an improvement (MMEngine's code default 0.1).
        strict: raise if ``monitor`` is missing from the metrics (else warn and skip).
        check_finite: stop when the metric becomes inf or nan.
        patience: evaluations without improvement before stopping.
        stopping_threshold: stop as soon as the metric is better than this.

    The best score and the wait count are kept in the message hub, so they survive a resume.
    """

    priority = "LOWEST"

    def __init__(
        self,
        monitor: str,
        rule: str | None = None,
        min_delta: float = 0.1,
        strict: bool = False,
        check_finite: bool = True,
        patience: int = 5,
        stopping_threshold: float | None = None,
    ) -> None:
        self.monitor = monitor
        if rule is not None and rule not in _COMPARE:
            raise ValueError(f'`rule` should be either "greater" or "less", but got {rule}')
        if rule is None:
            try:
                rule = infer_rule(monitor, DEFAULT_GREATER_KEYS, DEFAULT_LESS_KEYS)
            except ValueError:
                raise ValueError(
                    f"Cannot infer the rule for {monitor}, thus rule must be specified."
                ) from None
        self.rule = rule
        self.min_delta = min_delta if rule == "greater" else -1 * min_delta
        self.strict = strict
        self.check_finite = check_finite
        self.patience = patience
        self.stopping_threshold = stopping_threshold
        self.wait_count = 0
        self.best_score = -math.inf if rule == "greater" else math.inf

    def _info_key(self, name: str) -> str:
        return f"early_stopping/{self.monitor}/{name}"

    def before_train(self, runner: Runner) -> None:
        if not hasattr(runner.train_loop, "stop_training"):
            raise AttributeError("`train_loop` should contain `stop_training` variable.")
        hub = runner.message_hub
        self.best_score = hub.get_info(self._info_key("best_score"), self.best_score)
        self.wait_count = hub.get_info(self._info_key("wait_count"), self.wait_count)

    def _check_stop_condition(self, score: float) -> tuple[bool, str]:
        compare = _COMPARE[self.rule]
        if self.check_finite and not math.isfinite(score):
            return True, (
                f"Monitored metric {self.monitor} = {score} is infinite. Previous best value was "
                f"{self.best_score:.3f}."
            )
        if self.stopping_threshold is not None and compare(score, self.stopping_threshold):
            self.best_score = score
            return True, (
                f"Stopping threshold reached: `{self.monitor}` = {score} is {self.rule} than "
                f"{self.stopping_threshold}."
            )
        if compare(self.best_score + self.min_delta, score):
            self.wait_count += 1
            if self.wait_count >= self.patience:
                return True, (
                    f"the monitored metric did not improve in the last {self.wait_count} records. "
                    f"best score: {self.best_score:.3f}. "
                )
            return False, ""
        self.best_score = score
        self.wait_count = 0
        return False, ""

    def after_val_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        metrics = metrics or {}
        if self.monitor not in metrics:
            if self.strict:
                raise RuntimeError(
                    f"Early stopping conditioned on metric `{self.monitor} is not available. "
                    f"Please check available metrics {metrics}, or set `strict=False` in "
                    "`EarlyStoppingHook`."
                )
            warnings.warn(
                f"Skip early stopping process since the evaluation results ({list(metrics)}) do "
                f"not include `monitor` ({self.monitor}).",
                stacklevel=2,
            )
            return
        stop, message = self._check_stop_condition(float(metrics[self.monitor]))
        runner.message_hub.update_info(self._info_key("best_score"), float(self.best_score))
        runner.message_hub.update_info(self._info_key("wait_count"), int(self.wait_count))
        if stop:
            runner.train_loop.stop_training = True
            runner.logger.info(message)
