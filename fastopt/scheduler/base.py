"""The stepping contract every parameter scheduler shares (MMEngine's ``_ParamScheduler``).

A scheduler owns one key of every param group (``lr``, ``momentum``, ``weight_decay``, ...)
and rewrites it in place, so anything that reads ``group[key]`` at step time -- a
``torch.optim`` optimizer, a fastopt fused optimizer, an OptimWrapper's base-settings pseudo
group -- follows the schedule without extra work. The param_groups list and its dicts are
never replaced.

Counting follows MMEngine exactly, because configs and checkpoints move between the two:

* the constructor performs global step 0, so the value for the first iteration (or epoch)
  is in place before training starts;
* ``step()`` advances the global step; a scheduler acts only while
  ``begin <= global_step < end``, with ``last_step`` counting from ``begin``; outside that
  window the value is left as it is (frozen after ``end``);
* most schedulers are *chainable*: they rescale the current group value, so several
  schedulers over overlapping windows multiply;
* ``initial_<param>`` is written with ``setdefault``: the first scheduler built fixes the
  base value and later ones reuse it;
* ``state_dict()`` is every attribute but the optimizer, made of plain Python values, so a
  checkpoint loads with ``torch.load(weights_only=True)`` and a resumed run continues the
  same sequence.
"""

from __future__ import annotations

import logging
import numbers
import warnings
from typing import Any, ClassVar, Protocol

import torch

INF = int(1e9)
"""``end`` of a scheduler that never stops (MMEngine's sentinel, kept for config parity)."""

logger = logging.getLogger(__name__)


class HasParamGroups(Protocol):
    """Anything a scheduler can drive: an optimizer, an OptimWrapper, a fused optimizer."""

    param_groups: list[dict[str, Any]]


def real_param_groups(optimizer: HasParamGroups) -> list[dict[str, Any]]:
    """The optimizer's own groups, without an OptimWrapper's base-settings pseudo group.

    An OptimWrapper with several groups appends a pseudo group holding the optimizer's
    defaults to ``param_groups``; per-group settings given by the user (``min_value``
    lists, ``max_lr`` lists) describe the real groups only.
    """
    inner = getattr(optimizer, "optimizer", None)
    if inner is not None and hasattr(inner, "param_groups"):
        return inner.param_groups
    return optimizer.param_groups


def per_group_values(optimizer: HasParamGroups, value: Any, name: str) -> list[Any]:
    """Expand a scalar or a per-real-group list to one value per entry of ``param_groups``.

    A list may also cover the pseudo group explicitly; when it covers only the real groups,
    the pseudo group gets the last value (as MMEngine's ReduceOnPlateau does).
    """
    groups = optimizer.param_groups
    if not isinstance(value, (list, tuple)):
        return [value] * len(groups)
    n_real = len(real_param_groups(optimizer))
    if len(value) == len(groups):
        return list(value)
    if len(value) == n_real:
        return list(value) + [value[-1]] * (len(groups) - n_real)
    raise ValueError(f"expected {n_real} values for {name} (one per param group), got {len(value)}")


def check_optimizer(owner: str, optimizer: Any) -> None:
    """TypeError unless ``optimizer`` has ``param_groups`` a scheduler can drive."""
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(
            f"{owner}: optimizer should be an Optimizer (torch.optim), an OptimWrapper or an "
            f"object with param_groups, but got {type(optimizer).__name__}"
        )


# Checking that ``optimizer.step()`` runs before ``scheduler.step()`` (MMEngine and torch
# warn otherwise). Instead of replacing ``optimizer.step`` on the instance, as MMEngine does
# (which breaks deep copies and pickling of the optimizer), torch's public step hook counts
# the steps on the optimizer object itself.
_STEPS_ATTR = "_fastopt_steps_since_scheduler_built"
_HOOKED_ATTR = "_fastopt_counts_steps"
_ORDER_DOC = "https://pytorch.org/docs/stable/optim.html#how-to-adjust-learning-rate"


def _count_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    setattr(optimizer, _STEPS_ATTR, getattr(optimizer, _STEPS_ATTR, 0) + 1)


def _torch_optimizer(optimizer: HasParamGroups) -> torch.optim.Optimizer | None:
    """The ``torch.optim.Optimizer`` that finally steps (looking through a wrapper)."""
    inner = getattr(optimizer, "optimizer", optimizer)
    return inner if isinstance(inner, torch.optim.Optimizer) else None


def watch_optimizer_steps(optimizer: HasParamGroups) -> None:
    """Start counting the optimizer's steps from 0 (each new scheduler restarts the count,
    as in MMEngine)."""
    torch_optimizer = _torch_optimizer(optimizer)
    if torch_optimizer is None:
        return
    if not getattr(torch_optimizer, _HOOKED_ATTR, False):
        torch_optimizer.register_step_post_hook(_count_step)
        setattr(torch_optimizer, _HOOKED_ATTR, True)
    setattr(torch_optimizer, _STEPS_ATTR, 0)


def optimizer_has_stepped(optimizer: HasParamGroups) -> bool | None:
    """Whether the optimizer stepped since the last scheduler was built (None: unknown).

    An OptimWrapper that has processed an iteration counts as stepped even if the inner
    optimizer has not: with gradient accumulation, or when AMP skips a step on an inf
    gradient, the schedule is still stepped per iteration on purpose.
    """
    torch_optimizer = _torch_optimizer(optimizer)
    if torch_optimizer is None:
        return None
    return getattr(torch_optimizer, _STEPS_ATTR, 0) > 0 or getattr(optimizer, "inner_count", 0) > 0


def optimizer_defaults(optimizer: HasParamGroups) -> dict[str, Any]:
    """The optimizer's ``defaults``, looking through wrappers; else its first group."""
    for obj in (optimizer, getattr(optimizer, "optimizer", None)):
        defaults = getattr(obj, "defaults", None)
        if isinstance(defaults, dict):
            return defaults
    groups = optimizer.param_groups
    return dict(groups[0]) if groups else {}


def scale_epoch_value(value: Any, epoch_length: int) -> Any:
    """Epochs to iterations for a scalar or a list of epoch counts (``None`` stays)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [v * epoch_length for v in value]
    return value * epoch_length


class _ParamScheduler:
    """Base of all parameter schedulers; subclasses implement :meth:`_get_value`.

    Args:
        optimizer: A ``torch.optim.Optimizer``, an OptimWrapper or any object with
            ``param_groups``.
        param_name: The param-group key to schedule, e.g. ``'lr'``.
        begin: First global step (iteration or epoch) at which the scheduler acts.
        end: Global step at which it stops acting; the value stays as it is afterwards.
        last_step: ``-1`` for a fresh start. Any other value resumes *without* a state
            dict and needs ``initial_<param_name>`` in every group.
        by_epoch: Whether the runner steps this scheduler once per epoch (True) or once
            per iteration (False).
        verbose: Log every value change.
    """

    #: constructor arguments counted in epochs, scaled by ``build_iter_from_epoch``
    _epoch_valued_args: ClassVar[tuple[str, ...]] = ()
    #: whether ``build_iter_from_epoch`` also passes ``epoch_length`` to the constructor
    _takes_epoch_length: ClassVar[bool] = False

    def __init__(
        self,
        optimizer: HasParamGroups,
        param_name: str,
        begin: int = 0,
        end: int = INF,
        last_step: int = -1,
        by_epoch: bool = True,
        verbose: bool = False,
    ) -> None:
        name = type(self).__name__
        check_optimizer(name, optimizer)
        self.optimizer = optimizer
        self.param_name = param_name
        if end <= begin:
            raise ValueError(
                f"{name}: end should be larger than begin, but got begin={begin}, end={end}"
            )
        self.begin = begin
        self.end = end
        self.by_epoch = by_epoch
        if not isinstance(last_step, int) or last_step < -1:
            raise ValueError(f"{name}: last_step must be an int >= -1, got {last_step!r}")
        initial = f"initial_{param_name}"
        for i, group in enumerate(optimizer.param_groups):
            if param_name not in group:
                raise KeyError(
                    f"{name}: param_groups[{i}] has no {param_name!r} to schedule "
                    f"(keys: {sorted(k for k in group if k != 'params')})"
                )
            if last_step == -1:
                # The first scheduler built fixes the base value; later ones reuse it.
                group.setdefault(initial, group[param_name])
            elif initial not in group:
                raise KeyError(
                    f"param {initial!r} is not specified in param_groups[{i}] when resuming "
                    f"an optimizer (last_step={last_step}); load the optimizer state dict first"
                )
        self.base_values = [group[initial] for group in optimizer.param_groups]
        self.last_step = last_step
        self._global_step = -1
        self.verbose = verbose
        watch_optimizer_steps(optimizer)
        self.step()

    @classmethod
    def build_iter_from_epoch(
        cls,
        *args: Any,
        begin: float = 0,
        end: float = INF,
        by_epoch: bool = True,
        epoch_length: int | None = None,
        **kwargs: Any,
    ) -> _ParamScheduler:
        """Build an iteration-stepped scheduler from an epoch-based config.

        This is what ``convert_to_iter_based=True`` does: ``begin``/``end`` and the
        epoch-valued arguments (``step_size``, ``milestones``, ``T_max``, ``periods``,
        ``total_steps``) are multiplied by ``epoch_length``, so the same curve is drawn
        smoothly per iteration instead of in per-epoch stairs.
        """
        if not by_epoch:
            raise ValueError(
                f"{cls.__name__}: only an epoch-based config (by_epoch=True) can be converted "
                "to an iteration-based scheduler (convert_to_iter_based=True)"
            )
        if (
            not isinstance(epoch_length, numbers.Integral)
            or isinstance(epoch_length, bool)
            or epoch_length <= 0
        ):
            raise ValueError(
                f"{cls.__name__}: convert_to_iter_based=True needs epoch_length (iterations "
                f"per epoch) as a positive integer, but got {epoch_length!r}"
            )
        epoch_length = int(epoch_length)
        for key in cls._epoch_valued_args:
            if key in kwargs:
                kwargs[key] = scale_epoch_value(kwargs[key], epoch_length)
        if cls._takes_epoch_length:
            kwargs["epoch_length"] = epoch_length
        begin = int(begin * epoch_length)
        if end != INF:
            end = int(end * epoch_length)
        return cls(*args, begin=begin, end=end, by_epoch=False, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Every attribute except the optimizer (plain values, safe for weights_only loads)."""
        return {key: value for key, value in self.__dict__.items() if key != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the counters and settings saved by :meth:`state_dict`.

        Load the optimizer state first: the group values themselves live there.
        """
        self.__dict__.update(state_dict)

    def get_last_value(self) -> list[Any]:
        """The value of every param group after the latest step."""
        return self._last_value

    def _current_values(self) -> list[Any]:
        return [group[self.param_name] for group in self.optimizer.param_groups]

    def _get_value(self) -> list[Any]:
        """The new value of every param group at ``self.last_step``."""
        raise NotImplementedError

    def print_value(self, is_verbose: bool, group: int, value: float) -> None:
        """Log a changed value when ``verbose`` is set."""
        if is_verbose:
            logger.info(
                "%s: adjusting %s of group %d to %.4e.",
                type(self).__name__,
                self.param_name,
                group,
                value,
            )

    def step(self) -> None:
        """Advance one global step and update the groups if inside ``[begin, end)``."""
        if self._global_step == 0:  # the first step after the constructor's
            self._warn_if_optimizer_not_stepped()
        self._global_step += 1
        if self.begin <= self._global_step < self.end:
            self.last_step += 1
            values = self._get_value()
            for i, (group, value) in enumerate(zip(self.optimizer.param_groups, values)):
                group[self.param_name] = value
                self.print_value(self.verbose, i, value)
        self._last_value = self._current_values()

    def _warn_if_optimizer_not_stepped(self) -> None:
        if optimizer_has_stepped(self.optimizer) is False:
            warnings.warn(
                f"Detected call of `{type(self).__name__}.step()` before `optimizer.step()`: "
                "call `optimizer.step()` (or `optim_wrapper.update_params()`) first, then "
                "`scheduler.step()`, or the first value of the schedule is skipped (calls of "
                "an `optimizer.step` replaced on the instance are not counted). See "
                f"{_ORDER_DOC}",
                UserWarning,
                stacklevel=3,
            )

    def __repr__(self) -> str:
        fields = ("param_name", "begin", "end", "by_epoch", "last_step")
        shown = ", ".join(f"{k}={getattr(self, k)!r}" for k in fields if hasattr(self, k))
        return f"{type(self).__name__}({shown})"
