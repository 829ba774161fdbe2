"""Training loops: by epoch and by iteration (MMEngine's counters and hook order).

``runner.epoch``/``runner.iter`` at each hook point are exactly MMEngine's: during an
iteration ``iter`` is the 0-based index of that iteration; ``after_train_epoch`` sees ``iter``
already advanced but ``epoch`` not yet; validation during training sees the completed counts.

Resuming in the middle of an epoch continues with the next batch of the same epoch order: the
sampler is told where to start (:func:`fastopt.dataset.set_start_batch`), so no batch is loaded
just to be thrown away. Samplers without that ability fall back to drawing and discarding
batches (with a warning), as MMEngine does.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

from fastopt.dataset import loader_sampler, set_start_batch
from fastopt.model.steps import train_step
from fastopt.registry import LOOPS

from .base_loop import BaseLoop, calc_dynamic_intervals, current_interval

if TYPE_CHECKING:
    from fastopt.runner import Runner

logger = logging.getLogger(__name__)


def _set_sampler_epoch(dataloader: Any, epoch: int) -> None:
    sampler = loader_sampler(dataloader)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value):
        raise TypeError(f"{name} should be an integer, but got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return int(value)


class _TrainLoopBase(BaseLoop):
    """State shared by both training loops."""

    def __init__(
        self,
        runner: Runner,
        dataloader: DataLoader | Mapping[str, Any],
        val_begin: int,
        val_interval: int,
        dynamic_intervals: Sequence[tuple[int, int]] | None,
    ) -> None:
        super().__init__(runner, dataloader)
        self._epoch = 0
        self._iter = 0
        self.val_begin = _check_count("val_begin", val_begin)
        self.val_interval = _check_count("val_interval", val_interval)
        if self.val_interval == 0:
            raise ValueError("val_interval must be positive")
        self.stop_training = False
        self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
            self.val_interval, dynamic_intervals
        )

    @property
    def epoch(self) -> int:
        """Completed epochs (the current epoch's 0-based index during it)."""
        return self._epoch

    @property
    def iter(self) -> int:
        """Completed iterations (the current iteration's 0-based index during it)."""
        return self._iter

    @property
    def max_epochs(self) -> int:
        return self._max_epochs

    @property
    def max_iters(self) -> int:
        return self._max_iters

    def _train_iter(self, idx: int, data_batch: Any) -> None:
        """Hooks around ``train_step`` for one batch; the iteration count advances."""
        runner = self.runner
        runner.call_hook("before_train_iter", batch_idx=idx, data_batch=data_batch)
        outputs = train_step(runner.model, data_batch, runner.optim_wrapper)
        runner.call_hook("after_train_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs)
        self._iter += 1

    def _progress(self) -> int:
        """The count ``dynamic_intervals`` milestones are compared with."""
        raise NotImplementedError

    def _decide_current_val_interval(self) -> None:
        """Set ``val_interval`` from ``dynamic_intervals`` (MMEngine's name and signature,
        which custom loops call)."""
        self.val_interval = current_interval(
            self.dynamic_milestones, self.dynamic_intervals, self._progress()
        )


@LOOPS.register_module()
class EpochBasedTrainLoop(_TrainLoopBase):
    """Train for ``max_epochs`` epochs; validate after some of them.

    Args:
        runner: the runner.
        dataloader: the training dataloader or its config.
        max_epochs: number of epochs (an integer).
        val_begin: first epoch after which validation may run.
        val_interval: validate after every ``val_interval``-th epoch (and the last one).
        dynamic_intervals: ``[(epoch, interval), ...]``: from ``epoch`` on, use ``interval``.
            As in MMEngine an interval is looked up with the *next* epoch number, so it takes
            effect one epoch before its milestone.
    """

    def __init__(
        self,
        runner: Runner,
        dataloader: DataLoader | Mapping[str, Any],
        max_epochs: int,
        val_begin: int = 1,
        val_interval: int = 1,
        dynamic_intervals: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(runner, dataloader, val_begin, val_interval, dynamic_intervals)
        self._max_epochs = _check_count("max_epochs", max_epochs)
        self._max_iters = self._max_epochs * len(self.dataloader)

    def run(self) -> Any:
        """Run the remaining epochs; returns the model."""
        runner = self.runner
        runner.call_hook("before_train")
        while self._epoch < self._max_epochs and not self.stop_training:
            self.run_epoch()
            self._decide_current_val_interval()
            if (
                runner.val_loop is not None
                and self._epoch >= self.val_begin
                and (self._epoch % self.val_interval == 0 or self._epoch == self._max_epochs)
            ):
                runner.val_loop.run()
        runner.call_hook("after_train")
        return runner.model

    def run_epoch(self) -> None:
        """One epoch: hooks around every iteration of the dataloader."""
        runner = self.runner
        runner.call_hook("before_train_epoch")
        runner.model.train()
        done = self._iter - self._epoch * len(self.dataloader)  # > 0 after a mid-epoch resume
        batches: Iterator[Any]
        if done > 0 and not set_start_batch(self.dataloader, done):
            logger.warning(
                "The sampler cannot start mid-epoch; drawing %d batches to skip data that has "
                "already been trained",
                done,
            )
            batches = iter(self.dataloader)
            for _ in range(done):
                next(batches)
        else:
            batches = iter(self.dataloader)
        for idx, data_batch in enumerate(batches, start=max(done, 0)):
            self.run_iter(idx, data_batch)
        runner.call_hook("after_train_epoch")
        self._epoch += 1

    def _progress(self) -> int:
        return self._epoch + 1  # MMEngine looks the next epoch up

    def run_iter(self, idx: int, data_batch: Any) -> None:
        """One training iteration on ``data_batch`` (``idx``: its index in the epoch).

        Override it (MMEngine's signature) to change what an iteration does.
        """
        self._train_iter(idx, data_batch)


class _InfiniteLoaderIterator:
    """Restarts the dataloader when it is exhausted, advancing the sampler's epoch.

    The first restart logs a warning (a restart re-creates the loader's workers; an
    ``InfiniteSampler`` avoids it). MMEngine warns at every restart and sleeps 2 s; one
    warning says the same without a line per pass over a small dataset.
    """

    def __init__(self, dataloader: DataLoader) -> None:
        self._dataloader = dataloader
        self._iterator: Iterator[Any] | None = None
        self._epoch = 0
        self._warned_restart = False

    def skip(self, batches: int) -> None:
        """Position the stream after ``batches`` batches without loading them if possible."""
        sampler = loader_sampler(self._dataloader)
        if getattr(sampler, "infinite", False):
            positioned = set_start_batch(self._dataloader, batches)
        else:
            epoch, offset = divmod(batches, len(self._dataloader))
            self._epoch = epoch
            _set_sampler_epoch(self._dataloader, epoch)
            positioned = offset == 0 or set_start_batch(self._dataloader, offset)
        if not positioned:
            logger.warning(
                "Advance dataloader %d steps to skip data that has already been trained "
                "(the sampler cannot start at a given position)",
                batches,
            )
            self._epoch = 0
            _set_sampler_epoch(self._dataloader, 0)
            for _ in range(batches):
                next(self)
        self._iterator = None

    def __iter__(self) -> _InfiniteLoaderIterator:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = iter(self._dataloader)
        try:
            return next(self._iterator)
        except StopIteration:
            if not self._warned_restart:
                self._warned_restart = True
                logger.warning(
                    "Reach the end of the dataloader, it will be restarted and continue to "
                    "iterate. It is recommended to use `InfiniteSampler` "
                    "(sampler=dict(type='InfiniteSampler')) to enable the dataloader to "
                    "iterate infinitely."
                )
            self._epoch += 1
            _set_sampler_epoch(self._dataloader, self._epoch)
            self._iterator = iter(self._dataloader)
            try:
                return next(self._iterator)
            except StopIteration:
                raise RuntimeError("the training dataloader is empty") from None


@LOOPS.register_module()
class IterBasedTrainLoop(_TrainLoopBase):
    """Train for ``max_iters`` iterations, restarting the dataloader as needed.

    Args:
        runner: the runner.
        dataloader: the training dataloader or its config.
        max_iters: number of iterations (an integer).
        val_begin: first iteration after which validation may run.
        val_interval: validate after every ``val_interval``-th iteration (and the last one).
        dynamic_intervals: ``[(iteration, interval), ...]``, as for the epoch loop.

    ``runner.epoch`` stays 0; ``before_train_epoch``/``after_train_epoch`` run once, at the
    start and at the end.
    """

    def __init__(
        self,
        runner: Runner,
        dataloader: DataLoader | Mapping[str, Any],
        max_iters: int,
        val_begin: int = 1,
        val_interval: int = 1000,
        dynamic_intervals: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        super().__init__(runner, dataloader, val_begin, val_interval, dynamic_intervals)
        self._max_iters = _check_count("max_iters", max_iters)
        self._max_epochs = 1
        self.dataloader_iterator = _InfiniteLoaderIterator(self.dataloader)

    def run(self) -> Any:
        """Run the remaining iterations; returns the model."""
        runner = self.runner
        runner.call_hook("before_train")
        runner.call_hook("before_train_epoch")
        if self._iter > 0:
            self.dataloader_iterator.skip(self._iter)
        while self._iter < self._max_iters and not self.stop_training:
            runner.model.train()
            data_batch = next(self.dataloader_iterator)
            self.run_iter(data_batch)
            self._decide_current_val_interval()
            if (
                runner.val_loop is not None
                and self._iter >= self.val_begin
                and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)
            ):
                runner.val_loop.run()
        runner.call_hook("after_train_epoch")
        runner.call_hook("after_train")
        return runner.model

    def _progress(self) -> int:
        return self._iter + 1  # MMEngine looks the next iteration up

    def run_iter(self, data_batch: Any) -> None:
        """One training iteration on ``data_batch``.

        Override it (MMEngine's signature) to change what an iteration does; ``batch_idx``
        given to the hooks is the global iteration, as in MMEngine.
        """
        self._train_iter(self._iter, data_batch)
