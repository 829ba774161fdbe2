"""``Hook``: the base class of everything a runner calls at its fixed points.

Same hook points, signatures and helpers as MMEngine's ``Hook``, so a hook written for MMEngine
works here by changing its import. The runner calls a point on every registered hook that has
a method of that name, in priority order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Optional, Union

if TYPE_CHECKING:
    from fastopt.runner import Runner

DATA_BATCH = Optional[Union[dict, tuple, list]]


class Hook:
    """Base hook: every method is a no-op; override the points you need.

    ``priority`` (a class attribute, or set by the runner when the hook is registered) orders
    hooks; see :mod:`fastopt.hooks.priority`. The iteration and epoch points of the three
    phases delegate to :meth:`_before_epoch` / :meth:`_after_epoch` / :meth:`_before_iter` /
    :meth:`_after_iter` with ``mode`` ``'train'``, ``'val'`` or ``'test'``, so a hook that
    treats the phases alike overrides only those.
    """

    priority: Any = "NORMAL"
    stages: tuple[str, ...] = (
        "before_run",
        "after_load_checkpoint",
        "before_train",
        "before_train_epoch",
        "before_train_iter",
        "after_train_iter",
        "after_train_epoch",
        "before_val",
        "before_val_epoch",
        "before_val_iter",
        "after_val_iter",
        "after_val_epoch",
        "after_val",
        "before_save_checkpoint",
        "after_train",
        "before_test",
        "before_test_epoch",
        "before_test_iter",
        "after_test_iter",
        "after_test_epoch",
        "after_test",
        "after_run",
    )

    # ----------------------------------------------------------------- run / phase points
    def before_run(self, runner: Runner) -> None:
        """Before ``runner.train()``, ``val()`` or ``test()`` does anything else."""

    def after_run(self, runner: Runner) -> None:
        """After ``runner.train()``, ``val()`` or ``test()`` finished."""

    def before_train(self, runner: Runner) -> None:
        """Before the first training epoch (after a checkpoint was loaded or resumed)."""

    def after_train(self, runner: Runner) -> None:
        """After the last training epoch."""

    def before_val(self, runner: Runner) -> None:
        """Before a validation run."""

    def after_val(self, runner: Runner) -> None:
        """After a validation run."""

    def before_test(self, runner: Runner) -> None:
        """Before a test run."""

    def after_test(self, runner: Runner) -> None:
        """After a test run."""

    # ------------------------------------------------------------------------ checkpoints
    def before_save_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        """Just before ``checkpoint`` is written; a hook may add or change entries."""

    def after_load_checkpoint(self, runner: Runner, checkpoint: dict) -> None:
        """Just after ``checkpoint`` was read, before its states are applied."""

    # ----------------------------------------------------------------------------- epochs
    def before_train_epoch(self, runner: Runner) -> None:
        """Before each training epoch."""
        self._before_epoch(runner, mode="train")

    def before_val_epoch(self, runner: Runner) -> None:
        """Before the validation epoch."""
        self._before_epoch(runner, mode="val")

    def before_test_epoch(self, runner: Runner) -> None:
        """Before the test epoch."""
        self._before_epoch(runner, mode="test")

    def after_train_epoch(self, runner: Runner) -> None:
        """After each training epoch (``runner.iter`` already counts its iterations)."""
        self._after_epoch(runner, mode="train")

    def after_val_epoch(self, runner: Runner, metrics: dict[str, float] | None = None) -> None:
        """After the validation epoch, with the evaluator's ``metrics``."""
        self._after_epoch(runner, mode="val")

    def after_test_epoch(self, runner: Runner, metrics: dict[str, float] | None = None) -> None:
        """After the test epoch, with the evaluator's ``metrics``."""
        self._after_epoch(runner, mode="test")

    # ------------------------------------------------------------------------- iterations
    def before_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: DATA_BATCH = None
    ) -> None:
        """Before each training iteration."""
        self._before_iter(runner, batch_idx=batch_idx, data_batch=data_batch, mode="train")

    def before_val_iter(
        self, runner: Runner, batch_idx: int, data_batch: DATA_BATCH = None
    ) -> None:
        """Before each validation iteration."""
        self._before_iter(runner, batch_idx=batch_idx, data_batch=data_batch, mode="val")

    def before_test_iter(
        self, runner: Runner, batch_idx: int, data_batch: DATA_BATCH = None
    ) -> None:
        """Before each test iteration."""
        self._before_iter(runner, batch_idx=batch_idx, data_batch=data_batch, mode="test")

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        """After each training iteration; ``outputs`` are the model's log variables."""
        self._after_iter(
            runner, batch_idx=batch_idx, data_batch=data_batch, outputs=outputs, mode="train"
        )

    def after_val_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | None = None,
    ) -> None:
        """After each validation iteration; ``outputs`` are the model's predictions."""
        self._after_iter(
            runner, batch_idx=batch_idx, data_batch=data_batch, outputs=outputs, mode="val"
        )

    def after_test_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | None = None,
    ) -> None:
        """After each test iteration; ``outputs`` are the model's predictions."""
        self._after_iter(
            runner, batch_idx=batch_idx, data_batch=data_batch, outputs=outputs, mode="test"
        )

    # ------------------------------------------------------------- shared implementations
    def _before_epoch(self, runner: Runner, mode: str = "train") -> None:
        """Shared body of the ``before_*_epoch`` points."""

    def _after_epoch(self, runner: Runner, mode: str = "train") -> None:
        """Shared body of the ``after_*_epoch`` points."""

    def _before_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        mode: str = "train",
    ) -> None:
        """Shared body of the ``before_*_iter`` points."""

    def _after_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | dict | None = None,
        mode: str = "train",
    ) -> None:
        """Shared body of the ``after_*_iter`` points."""

    # ---------------------------------------------------------------------------- helpers
    def every_n_epochs(self, runner: Runner, n: int, start: int = 0) -> bool:
        """Whether the epoch that is ending is a multiple of ``n`` epochs after ``start``."""
        dividend = runner.epoch + 1 - start
        return dividend % n == 0 if dividend >= 0 and n > 0 else False

    def every_n_inner_iters(self, batch_idx: int, n: int) -> bool:
        """Whether ``batch_idx + 1`` (within the epoch) is a multiple of ``n``."""
        return (batch_idx + 1) % n == 0 if n > 0 else False

    def every_n_train_iters(self, runner: Runner, n: int, start: int = 0) -> bool:
        """Whether the iteration that is ending is a multiple of ``n`` after ``start``."""
        dividend = runner.iter + 1 - start
        return dividend % n == 0 if dividend >= 0 and n > 0 else False

    def end_of_epoch(self, dataloader: Any, batch_idx: int) -> bool:
        """Whether ``batch_idx`` is the last batch of ``dataloader``."""
        return batch_idx + 1 == len(dataloader)

    def is_last_train_epoch(self, runner: Runner) -> bool:
        """Whether the current epoch is the last training epoch."""
        return runner.epoch + 1 == runner.max_epochs

    def is_last_train_iter(self, runner: Runner) -> bool:
        """Whether the current iteration is the last training iteration."""
        return runner.iter + 1 == runner.max_iters

    def get_triggered_stages(self) -> list[str]:
        """The hook points this hook overrides (the shared ``_*`` bodies count for each)."""
        triggered: set[str] = set()
        for stage in self.stages:
            if _overrides(self, stage):
                triggered.add(stage)
        shared = {
            "_before_epoch": ["before_train_epoch", "before_val_epoch", "before_test_epoch"],
            "_after_epoch": ["after_train_epoch", "after_val_epoch", "after_test_epoch"],
            "_before_iter": ["before_train_iter", "before_val_iter", "before_test_iter"],
            "_after_iter": ["after_train_iter", "after_val_iter", "after_test_iter"],
        }
        for method, stages in shared.items():
            if _overrides(self, method):
                triggered.update(stages)
        return [stage for stage in self.stages if stage in triggered]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(priority={self.priority!r})"


def _overrides(hook: Hook, name: str) -> bool:
    method = getattr(type(hook), name, None)
    return method is not None and method is not getattr(Hook, name, None)
