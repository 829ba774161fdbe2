"""Generic ``*ParamScheduler`` classes: one schedule shape each, for any param-group key.

The update rules are MMEngine's, written in the same recursive (chainable) form and the
same order of floating-point operations, so sequences match MMEngine's to the last bit and
schedulers over overlapping windows multiply. Each class documents its closed form -- the
sequence it produces when it is the only scheduler acting on that key -- with
``t = last_step`` (steps since ``begin``) and ``b`` the base value ``initial_<param>``.
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from fastopt.registry import PARAM_SCHEDULERS

from .base import INF, HasParamGroups, _ParamScheduler, per_group_values


def _check_factor(owner: str, what: str, value: float) -> None:
    if value == 0:
        # MMEngine accepts 0, then divides by zero at a later step
        raise ValueError(
            f"{owner}: {what} must not be 0: the scheduler multiplies the current value "
            "step by step, so a value made 0 could never be scaled back up (MMEngine accepts "
            "0 and then divides by zero); use a small positive factor such as 1e-3"
        )
    if not 0 < value <= 1:
        raise ValueError(f"{owner}: {what} should be between 0 and 1, got {value}")


def _number_list(owner: str, name: str, value: Any) -> list[Any]:
    """``value`` as a list of numbers; a str or a lone number is a TypeError (a str would
    otherwise be taken as its characters)."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{owner}: {name} should be a list of numbers, but got {value!r}")
    items = list(value)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in items):
        raise TypeError(f"{owner}: {name} should be a list of numbers, but got {items!r}")
    return items


def _check_eta_min(owner: str, eta_min: float | None, eta_min_ratio: float | None) -> None:
    if eta_min is not None and eta_min_ratio is not None:
        raise ValueError(
            f"{owner}: either eta_min or eta_min_ratio should be specified, not both "
            f"(got eta_min={eta_min}, eta_min_ratio={eta_min_ratio})"
        )


@PARAM_SCHEDULERS.register_module()
class StepParamScheduler(_ParamScheduler):
    """Multiply the value by ``gamma`` every ``step_size`` steps: ``b * gamma**(t // step_size)``."""

    _epoch_valued_args = ("step_size",)

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        step_size: int,
        gamma: float = 0.1,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        if not isinstance(step_size, int) or step_size <= 0:
            raise ValueError(
                f"{type(self).__name__}: step_size must be a positive int, got {step_size!r}"
            )
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        if self.last_step == 0 or self.last_step % self.step_size != 0:
            return self._current_values()
        return [v * self.gamma for v in self._current_values()]


@PARAM_SCHEDULERS.register_module()
class MultiStepParamScheduler(_ParamScheduler):
    """Multiply by ``gamma`` at each milestone (relative to ``begin``; repeats stack).

    Closed form: ``b * gamma**(number of milestones <= t)``.
    """

    _epoch_valued_args = ("milestones",)

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        milestones: Sequence[int],
        gamma: float = 0.1,
        last_step: int = -1,
        begin: int = 0,
        end: int = INF,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        self.milestones = Counter(_number_list(type(self).__name__, "milestones", milestones))
        self.gamma = gamma
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        if self.last_step not in self.milestones:
            return self._current_values()
        factor = self.gamma ** self.milestones[self.last_step]
        return [v * factor for v in self._current_values()]


@PARAM_SCHEDULERS.register_module()
class ConstantParamScheduler(_ParamScheduler):
    """Multiply by ``factor`` until one step before ``end``, then restore.

    Closed form: ``b * factor`` for ``t < end - begin - 1``, ``b`` from there on (MMEngine
    restores the value at the last step of the window, not at ``end``).
    """

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        factor: float = 1.0 / 3,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        _check_factor(type(self).__name__, "factor (the constant multiplicative factor)", factor)
        self.factor = factor
        self.total_iters = end - begin - 1
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        if self.last_step == 0:
            return [v * self.factor for v in self._current_values()]
        if self.last_step == self.total_iters:
            return [v * (1.0 / self.factor) for v in self._current_values()]
        return self._current_values()


@PARAM_SCHEDULERS.register_module()
class ExponentialParamScheduler(_ParamScheduler):
    """Multiply by ``gamma`` every step: ``b * gamma**t``."""

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        gamma: float,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        self.gamma = gamma
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        if self.last_step == 0:
            return self._current_values()
        return [v * self.gamma for v in self._current_values()]


@PARAM_SCHEDULERS.register_module()
class CosineAnnealingParamScheduler(_ParamScheduler):
    """Cosine annealing from ``b`` to ``eta_min`` over ``T_max`` steps (SGDR without restarts).

    Closed form: ``eta_min + (b - eta_min) * (1 + cos(pi * t / T_max)) / 2``, with
    ``eta_min = b * eta_min_ratio`` when a ratio is given. ``T_max`` defaults to
    ``end - begin``, so the last value of the window is one step short of ``eta_min``; with
    ``end=INF`` the curve is periodic and climbs back after ``T_max``.
    """

    _epoch_valued_args = ("T_max",)

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        T_max: int | None = None,
        eta_min: float | None = None,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
        eta_min_ratio: float | None = None,
    ) -> None:
        _check_eta_min(type(self).__name__, eta_min, eta_min_ratio)
        if eta_min is None and eta_min_ratio is None:
            eta_min = 0.0
        self.T_max = T_max or (end - begin)
        self.eta_min = eta_min
        self.eta_min_ratio = eta_min_ratio
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _eta_min(self, base: float) -> float:
        return self.eta_min if self.eta_min_ratio is None else base * self.eta_min_ratio

    def _get_value(self) -> list[Any]:
        t, T = self.last_step, self.T_max
        if t == 0:
            return self._current_values()
        groups = self.optimizer.param_groups
        if (t - 1 - T) % (2 * T) == 0:
            return [
                g[self.param_name] + (b - self._eta_min(b)) * (1 - math.cos(math.pi / T)) / 2
                for b, g in zip(self.base_values, groups)
            ]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [
            ratio * (g[self.param_name] - self._eta_min(b)) + self._eta_min(b)
            for b, g in zip(self.base_values, groups)
        ]


@PARAM_SCHEDULERS.register_module()
class LinearParamScheduler(_ParamScheduler):
    """Ramp the multiplicative factor linearly from ``start_factor`` to ``end_factor``.

    Closed form: ``b * (s + (e - s) * t / (end - begin - 1))``: the factor reaches
    ``end_factor`` at the last step of the window (iteration ``end - 1``). With ``end=INF``
    the value stays near ``s * b``. The usual warm-up is ``start_factor=0.001, end=500``.
    """

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        owner = type(self).__name__
        _check_factor(owner, "start_factor (the starting multiplicative factor)", start_factor)
        if not 0 <= end_factor <= 1:
            raise ValueError(
                f"{owner}: end_factor (the ending multiplicative factor) should be between "
                f"0 and 1, got {end_factor}"
            )
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = end - begin - 1
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        s, e = self.start_factor, self.end_factor
        if self.last_step == 0:
            return [v * s for v in self._current_values()]
        factor = 1.0 + (e - s) / (self.total_iters * s + (self.last_step - 1) * (e - s))
        return [v * factor for v in self._current_values()]


@PARAM_SCHEDULERS.register_module()
class PolyParamScheduler(_ParamScheduler):
    """Polynomial decay to ``eta_min`` at the last step of the window.

    Closed form: ``eta_min + (b - eta_min) * ((N - t) / N)**power`` with
    ``N = end - begin - 1``, so the value is exactly ``eta_min`` at iteration ``end - 1``.
    """

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        eta_min: float = 0,
        power: float = 1.0,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        self.eta_min = eta_min
        self.power = power
        self.total_iters = end - begin - 1
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        if self.last_step == 0:
            return self._current_values()
        coeff = (1 - 1 / (self.total_iters - self.last_step + 1)) ** self.power
        return [(v - self.eta_min) * coeff + self.eta_min for v in self._current_values()]


@PARAM_SCHEDULERS.register_module()
class OneCycleParamScheduler(_ParamScheduler):
    """The 1cycle policy (Super-Convergence): up to ``eta_max``, then far below the start.

    Not chainable: it sets absolute values and overwrites the groups' ``initial_lr``
    (``eta_max / div_factor``), ``max_lr`` and ``min_lr`` (``initial_lr /
    final_div_factor``). ``total_steps`` defaults to ``end - begin``; stepping past it is an
    error. Only ``param_name='lr'`` is supported, as in MMEngine.
    """

    _epoch_valued_args = ("total_steps",)

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        eta_max: float | Sequence[float] = 0,
        total_steps: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: str = "cos",
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        owner = type(self).__name__
        if param_name != "lr":
            raise ValueError(
                f"{owner}: OneCycle only works for the learning rate, got param_name={param_name!r}"
            )
        if total_steps is None:
            total_steps = end - begin
        elif not isinstance(total_steps, int) or total_steps <= 0:
            raise ValueError(
                f"{owner}: expected a positive integer total_steps, got {total_steps!r}"
            )
        if isinstance(pct_start, bool) or not 0 <= pct_start <= 1:
            raise ValueError(f"{owner}: expected pct_start between 0 and 1, got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"{owner}: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}"
            )
        self.eta_max = eta_max
        self.total_steps = total_steps
        self.pct_start = pct_start
        self.anneal_strategy = anneal_strategy
        self.div_factor = div_factor
        self.final_div_factor = final_div_factor
        self.three_phase = three_phase
        up_end = float(pct_start * total_steps) - 1
        if three_phase:
            self._schedule_phases = [
                {"end_step": up_end, "start_lr": "initial_lr", "end_lr": "max_lr"},
                {
                    "end_step": float(2 * pct_start * total_steps) - 2,
                    "start_lr": "max_lr",
                    "end_lr": "initial_lr",
                },
                {"end_step": total_steps - 1, "start_lr": "initial_lr", "end_lr": "min_lr"},
            ]
        else:
            self._schedule_phases = [
                {"end_step": up_end, "start_lr": "initial_lr", "end_lr": "max_lr"},
                {"end_step": total_steps - 1, "start_lr": "max_lr", "end_lr": "min_lr"},
            ]
        if last_step == -1:
            max_values = per_group_values(optimizer, eta_max, "eta_max")
            for group, max_value in zip(optimizer.param_groups, max_values):
                group["initial_lr"] = max_value / div_factor
                group["max_lr"] = max_value
                group["min_lr"] = group["initial_lr"] / final_div_factor
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _get_value(self) -> list[Any]:
        step = self.last_step
        if step > self.total_steps:
            raise ValueError(
                f"{type(self).__name__}: tried to step {step + 1} times, but total_steps is "
                f"{self.total_steps}; set total_steps (or end) to the training length"
            )
        values = []
        last = len(self._schedule_phases) - 1
        for group in self.optimizer.param_groups:
            start_step = 0.0
            for i, phase in enumerate(self._schedule_phases):
                end_step = phase["end_step"]
                if step <= end_step or i == last:
                    pct = (step - start_step) / (end_step - start_step)
                    values.append(
                        self._anneal(group[phase["start_lr"]], group[phase["end_lr"]], pct)
                    )
                    break
                start_step = end_step
        return values


@PARAM_SCHEDULERS.register_module()
class CosineRestartParamScheduler(_ParamScheduler):
    """Cosine annealing with warm restarts over consecutive ``periods``.

    Each period starts again from ``b * restart_weights[i]`` and anneals toward ``eta_min``
    (or ``b * eta_min_ratio``): ``eta + (b*w - eta) * (1 + cos(pi * s / period)) / 2``
    with ``s`` the steps into the period. After the last period the value is left as is.
    """

    _epoch_valued_args = ("periods",)

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        periods: Sequence[int],
        restart_weights: Sequence[float] = (1,),
        eta_min: float | None = None,
        eta_min_ratio: float | None = None,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        owner = type(self).__name__
        _check_eta_min(owner, eta_min, eta_min_ratio)
        if eta_min is None and eta_min_ratio is None:
            raise ValueError(f"{owner}: either eta_min or eta_min_ratio should be specified")
        periods = _number_list(owner, "periods", periods)
        restart_weights = _number_list(owner, "restart_weights", restart_weights)
        if not periods or any(not isinstance(p, int) or p <= 0 for p in periods):
            raise ValueError(f"{owner}: periods must be positive ints, got {periods}")
        if len(periods) != len(restart_weights):
            raise ValueError(
                f"{owner}: periods and restart_weights should have the same length, got "
                f"{len(periods)} periods and {len(restart_weights)} restart_weights"
            )
        self.periods = periods
        self.restart_weights = restart_weights
        self.eta_min = eta_min
        self.eta_min_ratio = eta_min_ratio
        self.cumulative_periods = [sum(periods[: i + 1]) for i in range(len(periods))]
        super().__init__(optimizer, param_name, begin, end, last_step, by_epoch, verbose)

    def _get_value(self) -> list[Any]:
        idx = next((i for i, c in enumerate(self.cumulative_periods) if self.last_step < c), None)
        if idx is None:
            return self._current_values()
        weight = self.restart_weights[idx]
        period = self.periods[idx]
        step = self.last_step - (0 if idx == 0 else self.cumulative_periods[idx - 1])
        values = []
        for base, group in zip(self.base_values, self.optimizer.param_groups):
            eta_max = base * weight
            eta_min = self.eta_min if self.eta_min_ratio is None else base * self.eta_min_ratio
            if step == 0:
                values.append(eta_max)
            else:
                ratio = (1 + math.cos(math.pi * step / period)) / (
                    1 + math.cos(math.pi * (step - 1) / period)
                )
                values.append(ratio * (group[self.param_name] - eta_min) + eta_min)
        return values
