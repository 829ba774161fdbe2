"""``ParamSchedulerHook``: steps the parameter schedulers at the right points."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from fastopt.registry import HOOKS
from fastopt.scheduler import _ParamScheduler

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


def _each_scheduler(runner: Runner, action: Callable[[Any], None]) -> None:
    """``action(scheduler)`` for every built scheduler of the runner.

    Before ``train()`` builds them, ``runner.param_schedulers`` still holds their configs
    (e.g. during a ``runner.val()`` before any training): those are skipped.
    """
    schedulers = runner.param_schedulers
    if schedulers is None:
        return
    if isinstance(schedulers, list):
        groups = [schedulers]
    elif isinstance(schedulers, dict):
        groups = list(schedulers.values())
    else:
        raise TypeError(
            "runner.param_schedulers should be a list of schedulers or a dict of such lists, "
            f"but got {type(schedulers).__name__}"
        )
    for group in groups:
        if not isinstance(group, list):
            continue  # one scheduler's config (a dict), not built yet
        for scheduler in group:
            if isinstance(scheduler, _ParamScheduler):
                action(scheduler)


@HOOKS.register_module()
class ParamSchedulerHook(Hook):
    """Iteration-based schedulers step after every iteration, epoch-based ones after every
    epoch, and those that need metrics (``ReduceOnPlateau*``) after every validation."""

    priority = "LOW"

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        def step(scheduler: Any) -> None:
            if not scheduler.by_epoch:
                scheduler.step()

        _each_scheduler(runner, step)

    def after_train_epoch(self, runner: Runner) -> None:
        def step(scheduler: Any) -> None:
            if scheduler.by_epoch:
                scheduler.step()

        _each_scheduler(runner, step)

    def after_val_epoch(self, runner: Runner, metrics: dict | None = None) -> None:
        if metrics is None:
            return

        # by_epoch=False too: fastopt's ReduceOnPlateau also runs by iteration (counted in
        # after_train_iter); validation is when it judges, whatever unit begin/end use
        def step(scheduler: Any) -> None:
            if getattr(scheduler, "need_val_args", False):
                scheduler.step(metrics)

        _each_scheduler(runner, step)
