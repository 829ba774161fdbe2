"""Fit the parameter schedules to the length of training, naming the keys that clash.

A scheduler's ``end`` defaults to the end of training, so a run shortened below a scheduler's
``begin`` (``--cfg-options train_cfg.max_epochs=1`` on a config whose cosine begins after one
epoch of warm-up) would leave it an empty range, which the scheduler can only refuse with
"end should be larger than begin, begin=63, end=63" (iterations, no key named). Such a
scheduler would never take effect in the shortened run, so it is left out, with a warning in
the user's units (epochs or iterations) naming the keys; a shortened run then trains. What
cannot train is an error naming the keys: no iteration at all, or ``end <= begin`` as
written. The runner calls :func:`check_schedules_fit` before it builds the schedulers, and
``fastopt plot-schedule`` calls :func:`fit_schedules` the same way.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
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


@dataclass(frozen=True)
class RunLength:
    """The length of a training run, and the keys (or flags) the user set it with."""

    iter_based: bool
    max_epochs: int
    max_iters: int
    epoch_length: int
    epochs_key: str = "train_cfg.max_epochs"
    iters_key: str = "train_cfg.max_iters"


def _without(cfg: Any, dropped: set[int]) -> Any:
    """``cfg`` (a scheduler config, a list, or a dict of those per optimizer) without the
    scheduler configs whose ``id`` is in ``dropped``."""
    if isinstance(cfg, Mapping) and "type" not in cfg:
        return type(cfg)({name: _without(value, dropped) for name, value in cfg.items()})
    if isinstance(cfg, Mapping):
        return [] if id(cfg) in dropped else cfg
    if isinstance(cfg, (list, tuple)):
        return [item for item in cfg if id(item) not in dropped]
    return cfg


def fit_schedules(param_scheduler: Any, run: RunLength) -> tuple[Any, list[str]]:
    """``param_scheduler`` without the schedulers that begin where training has already ended
    (and whose ``end`` defaults to it), and a warning for each scheduler that does not fit.

    Raises :class:`ConfigValueError`, naming the keys, for a run without iterations and for
    ``end <= begin`` as written.
    """
    if run.iter_based:
        iters_key = f"{run.iters_key}={run.max_iters}"
        epochs_key = ""
    else:
        epochs_key = f"{run.epochs_key}={run.max_epochs}"
        iters_key = f"{epochs_key} x {run.epoch_length} iterations per epoch"
    schedulers = list(_scheduler_configs(param_scheduler))
    if not schedulers:
        return param_scheduler, []
    if run.max_iters == 0:
        if not run.iter_based and run.max_epochs > 0:
            why = f"train_dataloader yields no batches (len {run.epoch_length})"
        else:
            why = (iters_key if run.iter_based else epochs_key) + " leaves nothing to train"
        path, cfg = schedulers[0]
        raise ConfigValueError(
            f"{why}, so {path} ({cfg.get('type')}) has nothing to schedule; a training run "
            "needs at least one iteration"
        )
    warnings: list[str] = []
    dropped: set[int] = set()
    for path, cfg in schedulers:
        by_epoch = bool(cfg.get("by_epoch", True))
        if by_epoch and run.iter_based:
            continue  # epochs of an iteration loop are not a training length to check
        begin, end = cfg.get("begin", 0), cfg.get("end")
        if not _count(begin) or not (end is None or _count(end)):
            continue  # the scheduler reports a bad type itself
        if by_epoch:
            unit, length, length_key = "epoch", run.max_epochs, epochs_key
        else:
            unit, length, length_key = "iteration", run.max_iters, iters_key
        what = f"{path} ({cfg.get('type')})"
        if end is not None and end <= begin:
            raise ConfigValueError(f"{what}: end={end} must be larger than begin={begin}")
        if begin >= length:
            if end is None:  # its end defaults to the end of training: an empty range
                dropped.add(id(cfg))
                how = "left out"
            else:
                how = "it never takes effect"
            warnings.append(
                f"{what} begins at {unit} {begin}, and training ends at {unit} {length} "
                f"({length_key}): {how}; raise {length_key.split('=')[0]} above {begin} to "
                "train with it"
            )
        elif end is not None and end > length:
            warnings.append(
                f"{what} ends at {unit} {end}, after training ends at {unit} {length} "
                f"({length_key}): it is cut short there"
            )
    return _without(param_scheduler, dropped), warnings


def check_schedules_fit(runner: Runner, param_scheduler: Any) -> Any:
    """:func:`fit_schedules` for the runner's training loop; logs the warnings and returns
    the schedulers to build."""
    loop = runner.train_loop
    run = RunLength(
        iter_based=type(loop).__name__ == "IterBasedTrainLoop",
        max_epochs=loop.max_epochs,
        max_iters=loop.max_iters,
        epoch_length=len(runner.train_dataloader),
    )
    kept, warnings = fit_schedules(param_scheduler, run)
    logger = getattr(runner, "logger", logging.getLogger(__name__))
    for warning in warnings:
        logger.warning(warning)
    return kept
