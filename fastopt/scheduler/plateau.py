"""ReduceOnPlateau: cut a value when a validation metric stops improving.

Unlike the other schedulers it is driven by metrics, not by the step count: the runner
calls ``step()`` after every training epoch (``by_epoch=True``) or iteration
(``by_epoch=False``), which only counts, to honour ``begin``/``end``, and ``step(metrics)``
after every validation (``need_val_args``). Its constructor does not take a step, and
``_global_step`` starts at 0, as in MMEngine.

MMEngine accepts only ``by_epoch=True``; here ``by_epoch=False`` works too, so an
iteration-based run (``IterBasedTrainLoop``, or ``convert_to_iter_based=True``) can reduce
on plateau: ``begin``/``end`` then count iterations, ``patience`` still counts validations.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from fastopt.registry import PARAM_SCHEDULERS

from .base import INF, HasParamGroups, _ParamScheduler, check_optimizer, per_group_values


@PARAM_SCHEDULERS.register_module()
class ReduceOnPlateauParamScheduler(_ParamScheduler):
    """Multiply by ``factor`` after more than ``patience`` validations without improvement.

    Args:
        optimizer: The optimizer (or OptimWrapper) whose groups are scheduled.
        param_name: The param-group key to reduce.
        monitor: Name of the metric to watch in the dict given to ``step(metrics)``.
        rule: ``'less'`` (lower is better, e.g. a loss) or ``'greater'`` (e.g. accuracy).
        factor: Reduction factor, ``new = old * factor``; must be < 1.
        patience: Validations without improvement tolerated before reducing.
        threshold: Minimum change that counts as an improvement.
        threshold_rule: ``'rel'`` (relative to the best value) or ``'abs'``.
        cooldown: Validations to wait after a reduction before counting again.
        min_value: Lower bound, a scalar or one value per param group.
        eps: Reductions smaller than this are skipped.
        begin, end, last_step, by_epoch, verbose: As in every scheduler; with
            ``by_epoch=False``, ``begin``/``end`` count iterations.
    """

    need_val_args = True

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        monitor: str = "loss",
        rule: str = "less",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_rule: str = "rel",
        cooldown: int = 0,
        min_value: float | Sequence[float] = 0.0,
        eps: float = 1e-8,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        owner = type(self).__name__
        check_optimizer(owner, optimizer)
        if end <= begin:
            raise ValueError(
                f"{owner}: end should be larger than begin, but got begin={begin}, end={end}"
            )
        if not isinstance(last_step, int) or last_step < -1:
            raise ValueError(f"{owner}: last_step must be an int >= -1, got {last_step!r}")
        if factor >= 1.0:
            raise ValueError(f"{owner}: factor should be < 1.0, got {factor}")
        if threshold < 0:
            raise ValueError(f"{owner}: threshold {threshold} should be >= 0")
        if rule not in ("less", "greater"):
            raise ValueError(f"{owner}: rule must be 'less' or 'greater', got {rule!r}")
        if threshold_rule not in ("rel", "abs"):
            raise ValueError(
                f"{owner}: threshold_rule must be 'rel' or 'abs', got {threshold_rule!r}"
            )
        self.optimizer = optimizer
        self.param_name = param_name
        self.begin = begin
        self.end = end
        self.by_epoch = by_epoch
        initial = f"initial_{param_name}"
        for i, group in enumerate(optimizer.param_groups):
            if param_name not in group:
                raise KeyError(f"{owner}: param_groups[{i}] has no {param_name!r} to schedule")
            if last_step == -1:
                group.setdefault(initial, group[param_name])
            elif initial not in group:
                raise KeyError(
                    f"param {initial!r} is not specified in param_groups[{i}] when resuming "
                    f"an optimizer (last_step={last_step}); load the optimizer state dict first"
                )
        self.last_step = last_step
        self._global_step = 0
        self.verbose = verbose
        self.factor = factor
        self.min_values = per_group_values(optimizer, min_value, "min_value")
        self.patience = patience
        self.cooldown = cooldown
        self.cooldown_counter = 0
        self.eps = eps
        self.monitor = monitor
        self.rule = rule
        self.threshold = threshold
        self.threshold_rule = threshold_rule
        self.rule_worse = math.inf if rule == "less" else -math.inf
        self.best = self.rule_worse
        self.num_bad_epochs = 0
        self._last_value = self._current_values()

    def step(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Count an epoch (no metrics) or judge a validation result (``metrics``)."""
        if metrics is None:
            self._global_step += 1
            return
        if not isinstance(metrics, Mapping):
            raise TypeError(
                f"{type(self).__name__}: metrics should be a dict, got {type(metrics).__name__}"
            )
        if self.begin <= self._global_step < self.end:
            self.last_step += 1
            if self.monitor not in metrics:
                raise KeyError(
                    f"{type(self).__name__} monitors {self.monitor!r}, but the metrics given "
                    f"to step() are {sorted(metrics)}; set monitor= to one of them"
                )
            metric = float(metrics[self.monitor])
            if self._is_better(metric, self.best):
                self.best = metric
                self.num_bad_epochs = 0
            else:
                self.num_bad_epochs += 1
            if self.cooldown_counter > 0:
                self.cooldown_counter -= 1
                self.num_bad_epochs = 0  # bad epochs in cooldown do not count
            if self.num_bad_epochs > self.patience:
                groups = self.optimizer.param_groups
                for i, (group, value) in enumerate(zip(groups, self._get_value())):
                    if group[self.param_name] - value > self.eps:
                        group[self.param_name] = value
                        self.print_value(self.verbose, i, value)
                self.cooldown_counter = self.cooldown
                self.num_bad_epochs = 0
        self._last_value = self._current_values()

    def _get_value(self) -> list[Any]:
        return [
            max(float(v) * self.factor, min_v)
            for v, min_v in zip(self._current_values(), self.min_values)
        ]

    def _is_better(self, a: float, best: float) -> bool:
        if self.rule == "less" and self.threshold_rule == "rel":
            return a < best * (1.0 - self.threshold)
        if self.rule == "less":
            return a < best - self.threshold
        if self.threshold_rule == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold
