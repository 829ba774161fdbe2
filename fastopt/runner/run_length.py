"""Check the parameter schedules against the length of training, naming the keys that clash.

A scheduler's ``end`` defaults to the end of training, so ``train_cfg.max_epochs=0``, or
``max_epochs`` not above a scheduler's ``begin``, leaves an empty schedule; the scheduler
itself can only say "end should be larger than begin, begin=6, end=0", which names neither
``max_epochs`` nor the scheduler's place in the config. The runner calls
:func:`check_schedules_fit` before it builds the schedulers.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from fastopt.config.errors import ConfigValueError

if TYPE_CHECKING:
    from fastopt.runner import Runner


def _scheduler_configs(cfg: Any, path: str = "param_scheduler") -> Iterator[tuple[str, Mapping]]:
    """(key path, config) of each scheduler config in a ``param_scheduler`` value (a dict, a
    list, or a dict of those per optimizer); built schedulers are skipped."""
    if isinstance(cfg, Mapping):
        if "type" in cfg:
            yield path, cfg
        else:
            for name, value in cfg.items():
                yield from _scheduler_configs(value, f"{path}.{name}")
    elif isinstance(cfg, (list, tuple)):
        for i, item in enumerate(cfg):
            if isinstance(item, Mapping):
                yield f"{path}.{i}", item


def _count(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_schedules_fit(runner: Runner, param_scheduler: Any) -> None:
    """Raise :class:`ConfigValueError` for a schedule that cannot fit in the training run;
    log a warning for one that starts after training ends (it never takes effect)."""
    loop = runner.train_loop
    iter_based = type(loop).__name__ == "IterBasedTrainLoop"
    epoch_length = len(runner.train_dataloader)
    if iter_based:
        iters_key = f"train_cfg.max_iters={loop.max_iters}"
    else:
        epochs_key = f"train_cfg.max_epochs={loop.max_epochs}"
        iters_key = f"{epochs_key} x {epoch_length} iterations per epoch"
    schedulers = list(_scheduler_configs(param_scheduler))
    if not schedulers:
        return
    if loop.max_iters == 0:
        if not iter_based and loop.max_epochs > 0:
            why = f"train_dataloader yields no batches (len {epoch_length})"
        else:
            why = (iters_key if iter_based else epochs_key) + " leaves nothing to train"
        path, cfg = schedulers[0]
        raise ConfigValueError(
            f"{why}, so {path} ({cfg.get('type')}) has nothing to schedule; a training run "
            "needs at least one iteration"
        )
    logger = getattr(runner, "logger", logging.getLogger(__name__))
    for path, cfg in schedulers:
        by_epoch = bool(cfg.get("by_epoch", True))
        if by_epoch and iter_based:
            continue  # epochs of an iteration loop are not a training length to check
        begin, end = cfg.get("begin", 0), cfg.get("end")
        if not _count(begin) or not (end is None or _count(end)):
            continue  # the scheduler reports a bad type itself
        if by_epoch:
            unit, length, length_key = "epoch", loop.max_epochs, epochs_key
        else:
            unit, length, length_key = "iteration", loop.max_iters, iters_key
        what = f"{path} ({cfg.get('type')})"
        if end is None and begin >= length:
            raise ConfigValueError(
                f"{what} begins at {unit} {begin}, but training ends at {unit} {length} "
                f"({length_key}), which is also the scheduler's default end: raise "
                f"{length_key.split('=')[0]} above {begin} or lower {path}.begin"
            )
        if end is not None and end <= begin:
            raise ConfigValueError(f"{what}: end={end} must be larger than begin={begin}")
        if begin >= length:
            logger.warning(
                f"{what} begins at {unit} {begin}, after training ends at {unit} {length} "
                f"({length_key}): it never takes effect"
            )
