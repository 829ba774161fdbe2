"""Tiny models, data, metrics, a recording hook and the toy runner shared by the runner-layer
tests.

Imported as ``runner_toys`` (tests/conftest.py puts this directory on ``sys.path``; tests/ is
not a package); registering happens once per process, under names no other test uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from fastopt.evaluator import BaseMetric
from fastopt.hooks import Hook
from fastopt.model import BaseModel
from fastopt.registry import DATASETS, HOOKS, METRICS, MODELS
from fastopt.runner import Runner


@DATASETS.register_module()
class RunnerToyDataset(Dataset):
    """``n`` samples ``dict(inputs=x (4,), data_samples=label)``, the same for every seed."""

    def __init__(self, n: int = 16, dim: int = 4) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x.sum(1) > 0).long()
        self.metainfo = dict(classes=("neg", "pos"))
        self.gets = 0  # samples loaded: a resumed run must not load skipped batches

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.gets += 1
        return dict(inputs=self.x[i], data_samples=self.y[i])


@MODELS.register_module()
class RunnerToyModel(BaseModel):
    """Linear classifier with dropout (so resuming must restore the torch RNG)."""

    def __init__(self, dim: int = 4, dropout: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fc = nn.Linear(dim, 2)
        self.bn = nn.BatchNorm1d(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
        x = torch.stack(inputs) if isinstance(inputs, list) else inputs
        out = self.fc(self.drop(self.bn(x)))
        if mode == "tensor":
            return out
        y = torch.stack(data_samples) if isinstance(data_samples, list) else data_samples
        if mode == "loss":
            return dict(
                loss=nn.functional.cross_entropy(out, y),
                acc=(out.argmax(1) == y).float().mean(),
            )
        return list(zip(out.argmax(1).tolist(), y.tolist()))


class PlainToyModule(nn.Module):
    """A plain module (no BaseModel): ``forward(x, y)`` returns a dict of losses."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, inputs: torch.Tensor, data_samples: torch.Tensor) -> Any:
        out = self.fc(inputs)
        if self.training:
            return dict(loss=nn.functional.cross_entropy(out, data_samples))
        return list(zip(out.argmax(1).tolist(), data_samples.tolist()))


@METRICS.register_module()
class RunnerToyAccuracy(BaseMetric):
    """Accuracy of ``(prediction, label)`` pairs; ``scores`` (a list) overrides the value."""

    def __init__(self, scores: list[float] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scores = list(scores) if scores is not None else None
        self.calls = 0

    def process(self, data_batch: Any, data_samples: Any) -> None:
        for pred, label in data_samples:
            self.results.append(int(pred == label))

    def compute_metrics(self, results: list) -> dict[str, float]:
        self.calls += 1
        if self.scores is not None:
            return dict(acc=self.scores[min(self.calls, len(self.scores)) - 1])
        return dict(acc=sum(results) / len(results))


class Crash(Exception):
    """Raised by :class:`CrashAfter` to stop a run as a killed job would."""


class CrashAfter(Hook):
    """Raises :class:`Crash` once ``n`` training iterations are done and saved.

    ``stage``: ``'iter'`` (after that iteration's hooks), ``'epoch'`` (after the epoch that
    ends there) or ``'val'`` (after the validation that follows it). LOWEST priority: the
    checkpoint hook has run by then.
    """

    priority = "LOWEST"

    def __init__(self, n: int, stage: str = "iter") -> None:
        self.n = n
        self.stage = stage

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None
    ) -> None:
        if self.stage == "iter" and runner.iter + 1 == self.n:
            raise Crash(f"stopped after {self.n} iterations")

    def after_train_epoch(self, runner: Any) -> None:
        if self.stage == "epoch" and runner.iter == self.n:
            raise Crash(f"stopped after {self.n} iterations")

    def after_val(self, runner: Any) -> None:
        if self.stage == "val" and runner.iter == self.n:
            raise Crash(f"stopped after {self.n} iterations")


@HOOKS.register_module()
class RecorderHook(Hook):
    """Records (stage, epoch, iter, batch_idx) at every hook point."""

    priority = "LOWEST"

    def __init__(self) -> None:
        self.records: list[tuple[str, int, int, int | None]] = []

    def _record(self, stage: str, runner: Any, batch_idx: int | None = None) -> None:
        self.records.append((stage, runner.epoch, runner.iter, batch_idx))

    def stages_named(self, stage: str) -> list[tuple[str, int, int, int | None]]:
        return [r for r in self.records if r[0] == stage]


def _make_point(stage: str) -> Any:
    if stage.endswith("_iter"):

        def point(
            self: RecorderHook,
            runner: Any,
            batch_idx: int,
            data_batch: Any = None,
            outputs: Any = None,
        ) -> None:
            self._record(stage, runner, batch_idx)

    elif stage in ("before_save_checkpoint", "after_load_checkpoint"):

        def point(self: RecorderHook, runner: Any, checkpoint: dict) -> None:  # type: ignore[misc]
            self._record(stage, runner)

    elif stage in ("after_val_epoch", "after_test_epoch"):

        def point(self: RecorderHook, runner: Any, metrics: Any = None) -> None:  # type: ignore[misc]
            self._record(stage, runner)

    else:

        def point(self: RecorderHook, runner: Any) -> None:  # type: ignore[misc]
            self._record(stage, runner)

    return point


for _stage in Hook.stages:
    setattr(RecorderHook, _stage, _make_point(_stage))


def loader(batch_size: int = 4, n: int = 16, shuffle: bool = True, **kwargs: Any) -> dict:
    return dict(
        batch_size=batch_size,
        dataset=dict(type="RunnerToyDataset", n=n),
        sampler=dict(type="DefaultSampler", shuffle=shuffle),
        **kwargs,
    )


def make_cfg(work_dir: str, **overrides: Any) -> dict[str, Any]:
    """A complete, fast training config (epoch-based, SGD, val every epoch, quiet logs)."""
    cfg: dict[str, Any] = dict(
        model=dict(type="RunnerToyModel"),
        work_dir=str(work_dir),
        train_dataloader=loader(),
        val_dataloader=loader(shuffle=False),
        val_evaluator=dict(type="RunnerToyAccuracy"),
        val_cfg=dict(),
        train_cfg=dict(type="EpochBasedTrainLoop", max_epochs=2),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9)),
        randomness=dict(seed=0),
        log_level="WARNING",
    )
    cfg.update(overrides)
    return cfg


def build(work_dir: Any, **overrides: Any) -> Runner:
    """A runner of :func:`make_cfg` in ``work_dir``, with ``overrides``."""
    return Runner(**make_cfg(work_dir, **overrides))


def log_text(runner: Runner) -> str:
    """The run's log file as it is on disk now."""
    runner.flush_logs()
    return Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
