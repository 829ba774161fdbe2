"""Loops: runner.epoch / runner.iter / batch_idx at every hook point, validation timing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import runner_toys as toys
import torch
from runner_toys import build

from fastopt.hooks import Hook  # noqa: E402
from fastopt.loops import EpochBasedTrainLoop, IterBasedTrainLoop, calc_dynamic_intervals  # noqa: E402
from fastopt.registry import LOOPS  # noqa: E402
from fastopt.runner import Runner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def no_val() -> dict:
    return dict(val_cfg=None, val_dataloader=None, val_evaluator=None)


class ValTimes(Hook):
    """Training progress (epoch, iter) at each validation."""

    def __init__(self):
        self.at: list[tuple[int, int]] = []

    def before_val(self, runner):
        self.at.append((runner.epoch, runner.iter))


# ------------------------------------------------------------------------------ counters
def test_epoch_based_counters_at_every_hook_point(tmp_path):
    rec = toys.RecorderHook()
    runner = build(
        tmp_path,
        custom_hooks=[rec],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
    )
    runner.train()
    r = rec.records
    assert r[0] == ("before_run", 0, 0, None)
    assert r[1] == ("before_train", 0, 0, None)
    assert rec.stages_named("before_train_epoch") == [
        ("before_train_epoch", 0, 0, None),
        ("before_train_epoch", 1, 4, None),
    ]
    assert rec.stages_named("before_train_iter") == [
        ("before_train_iter", e, 4 * e + i, i) for e in range(2) for i in range(4)
    ]
    assert rec.stages_named("after_train_iter") == [
        ("after_train_iter", e, 4 * e + i, i) for e in range(2) for i in range(4)
    ]
    # after_train_epoch: iter already counts the epoch, epoch does not yet
    assert rec.stages_named("after_train_epoch") == [
        ("after_train_epoch", 0, 4, None),
        ("after_train_epoch", 1, 8, None),
    ]
    assert rec.stages_named("before_save_checkpoint") == [
        ("before_save_checkpoint", 0, 4, None),
        ("before_save_checkpoint", 1, 8, None),
    ]
    # validation during training sees the completed epochs and iterations
    for stage in ("before_val", "before_val_epoch", "after_val_epoch", "after_val"):
        assert [x[1:3] for x in rec.stages_named(stage)] == [(1, 4), (2, 8)]
    assert rec.stages_named("before_val_iter") == [
        ("before_val_iter", e, 4 * e, i) for e in (1, 2) for i in range(4)
    ]
    assert r[-2:] == [("after_train", 2, 8, None), ("after_run", 2, 8, None)]
    # the order of points within the first iteration and around the first epoch end
    stages = [x[0] for x in r]
    first_epoch_end = stages.index("after_train_epoch")
    assert stages[first_epoch_end - 2 : first_epoch_end + 3] == [
        "after_train_iter",
        "before_save_checkpoint",  # CheckpointHook saves in after_train_epoch, before LOWEST
        "after_train_epoch",
        "before_val",
        "before_val_epoch",
    ]
    meta = torch.load(tmp_path / "epoch_1.pth", weights_only=True)["meta"]
    assert (meta["epoch"], meta["iter"]) == (1, 4)


def test_iter_based_counters_val_and_checkpoints(tmp_path):
    rec = toys.RecorderHook()
    runner = build(
        tmp_path,
        custom_hooks=[rec],
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=10, val_interval=4),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=4)),
    )
    runner.train()
    assert rec.stages_named("before_train_epoch") == [("before_train_epoch", 0, 0, None)]
    assert rec.stages_named("after_train_epoch") == [("after_train_epoch", 0, 10, None)]
    # batch_idx is the global iteration; epoch stays 0
    assert rec.stages_named("after_train_iter") == [
        ("after_train_iter", 0, i, i) for i in range(10)
    ]
    assert [x[1:3] for x in rec.stages_named("before_val")] == [(0, 4), (0, 8), (0, 10)]
    assert sorted(p.name for p in tmp_path.glob("iter_*.pth")) == [
        "iter_10.pth",
        "iter_4.pth",
        "iter_8.pth",
    ]
    meta = torch.load(tmp_path / "iter_8.pth", weights_only=True)["meta"]
    assert (meta["epoch"], meta["iter"]) == (0, 8)
    assert rec.records[-2:] == [("after_train", 0, 10, None), ("after_run", 0, 10, None)]


def test_iter_based_loop_restarts_the_loader_with_a_new_epoch_order(tmp_path):
    class Batches(Hook):
        def __init__(self):
            self.seen = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.seen.append(tuple(torch.stack(data_batch["inputs"])[:, 0].tolist()))

    batches = Batches()
    runner = build(
        tmp_path,
        custom_hooks=[batches],
        train_cfg=dict(by_epoch=False, max_iters=8, val_interval=100),
        default_hooks=dict(checkpoint=None),
        **no_val(),
    )
    runner.train()
    first, second = batches.seen[:4], batches.seen[4:]
    assert sorted(x for b in first for x in b) == sorted(x for b in second for x in b)
    assert first != second  # the second pass is reshuffled (sampler epoch 1)
    assert runner.train_dataloader.sampler.epoch == 1


# ------------------------------------------------------------------------- val timing
def test_epoch_val_timing_with_val_begin_interval_and_dynamic_intervals(tmp_path):
    times = ValTimes()
    runner = build(
        tmp_path,
        custom_hooks=[times],
        train_cfg=dict(
            by_epoch=True, max_epochs=6, val_begin=2, val_interval=2, dynamic_intervals=[(4, 1)]
        ),
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    # MMEngine's golden: the interval is looked up with epoch + 1, so (4, 1) acts from epoch 3
    assert [e for e, _ in times.at] == [2, 3, 4, 5, 6]


@pytest.mark.parametrize(
    ("train_cfg", "expected"),
    [
        (dict(by_epoch=True, max_epochs=5, val_begin=3, val_interval=1), [3, 4, 5]),
        (dict(by_epoch=True, max_epochs=5, val_interval=2), [2, 4, 5]),  # the last epoch always
        (dict(by_epoch=True, max_epochs=2, val_begin=3), []),
    ],
)
def test_epoch_val_timing_cases(tmp_path, train_cfg, expected):
    times = ValTimes()
    runner = build(
        tmp_path, custom_hooks=[times], train_cfg=train_cfg, default_hooks=dict(checkpoint=None)
    )
    runner.train()
    assert [e for e, _ in times.at] == expected


def test_iter_val_timing_with_dynamic_intervals(tmp_path):
    times = ValTimes()
    runner = build(
        tmp_path,
        custom_hooks=[times],
        train_cfg=dict(by_epoch=False, max_iters=12, val_interval=5, dynamic_intervals=[(8, 2)]),
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    assert [i for _, i in times.at] == [5, 8, 10, 12]


def test_stop_training_ends_an_iteration_based_loop(tmp_path):
    class Stop(Hook):
        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            if runner.iter == 2:
                runner.train_loop.stop_training = True

    runner = build(
        tmp_path,
        custom_hooks=[Stop()],
        train_cfg=dict(by_epoch=False, max_iters=10),
        default_hooks=dict(checkpoint=None),
        **no_val(),
    )
    runner.train()
    assert runner.iter == 3


# ----------------------------------------------------------------------- val / test only
def test_val_and_test_without_training(tmp_path):
    rec = toys.RecorderHook()
    runner = Runner(
        model=dict(type="RunnerToyModel"),
        work_dir=str(tmp_path),
        val_dataloader=toys.loader(shuffle=False),
        val_cfg=dict(),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.25]),
        test_dataloader=toys.loader(shuffle=False),
        test_cfg=dict(type="TestLoop"),
        test_evaluator=[dict(type="RunnerToyAccuracy", scores=[0.75], prefix="test")],
        custom_hooks=[rec],
        log_level="INFO",
    )
    assert runner.val() == dict(acc=0.25)
    assert runner.test() == {"test/acc": 0.75}
    assert {x[1:3] for x in rec.records} == {(0, 0)}
    assert [x[3] for x in rec.stages_named("after_test_iter")] == [0, 1, 2, 3]
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert "Epoch(val) [0][4/4]    acc: 0.2500  data_time: " in log
    assert "Epoch(test) [4/4]    test/acc: 0.7500  data_time: " in log
    dumped = json.loads(Path(runner.log_dir, f"{runner.timestamp}.json").read_text())
    assert dumped["test/acc"] == 0.75


# --------------------------------------------------------------------------- errors
def test_calc_dynamic_intervals():
    assert calc_dynamic_intervals(3) == ([0], [3])
    assert calc_dynamic_intervals(3, [(4, 1), (8, 2)]) == ([0, 4, 8], [3, 1, 2])
    with pytest.raises(ValueError, match="milestones must increase"):
        calc_dynamic_intervals(3, [(4, 1), (4, 2)])
    with pytest.raises(ValueError, match="must be \\(milestone, interval\\)"):
        calc_dynamic_intervals(3, [4])


@pytest.mark.parametrize(
    ("train_cfg", "error", "text"),
    [
        (
            dict(type="EpochBasedTrainLoop", by_epoch=True, max_epochs=1),
            RuntimeError,
            "Only one of `type` or `by_epoch`",
        ),
        (dict(max_epochs=1), KeyError, "train_cfg needs `type`"),
        (dict(by_epoch=True, max_epochs=2.5), TypeError, "max_epochs should be an integer"),
        (
            dict(by_epoch=True, max_epochs=2, val_interval=0),
            ValueError,
            "val_interval must be positive",
        ),
        (dict(type="NoSuchLoop"), KeyError, "NoSuchLoop is not in the fastopt::loop registry"),
    ],
)
def test_train_loop_config_errors(tmp_path, train_cfg, error, text):
    runner = build(tmp_path, train_cfg=train_cfg)
    with pytest.raises(error, match=text):
        runner.train()


def test_loop_classes_and_lengths(tmp_path):
    runner = build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=3))
    assert isinstance(runner.train_loop, EpochBasedTrainLoop)
    assert (runner.max_epochs, runner.max_iters) == (3, 12)
    runner = build(tmp_path, train_cfg=dict(by_epoch=False, max_iters=7))
    assert isinstance(runner.train_loop, IterBasedTrainLoop)
    assert (runner.max_epochs, runner.max_iters, runner.val_interval) == (1, 7, 1000)


# --------------------------------------------------- MMEngine behaviours (issue 20, §4)
@LOOPS.register_module()
class CountingEpochLoop(EpochBasedTrainLoop):
    """An MMEngine-style custom loop: overrides run_iter and calls the interval helper."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[int] = []
        self.intervals: list[int] = []

    def run_iter(self, idx, data_batch):
        self.calls.append(idx)
        super().run_iter(idx, data_batch)

    def run_epoch(self):
        super().run_epoch()
        self._decide_current_val_interval()  # MMEngine's no-argument signature
        self.intervals.append(self.val_interval)


@LOOPS.register_module()
class CountingIterLoop(IterBasedTrainLoop):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.iters_at_call: list[int] = []

    def run_iter(self, data_batch):
        self.iters_at_call.append(self.iter)
        super().run_iter(data_batch)


def test_custom_loops_override_the_public_run_iter(tmp_path):
    rec = toys.RecorderHook()
    runner = build(
        tmp_path,
        train_cfg=dict(type="CountingEpochLoop", max_epochs=3, dynamic_intervals=[(2, 2)]),
        custom_hooks=[rec],
        default_hooks=dict(checkpoint=None),
        **no_val(),
    )
    runner.train()
    loop = runner.train_loop
    assert loop.calls == [0, 1, 2, 3] * 3 and runner.iter == 12
    assert loop.intervals == [2, 2, 2]  # looked up at epoch + 1, as in MMEngine
    assert [r[3] for r in rec.stages_named("after_train_iter")] == [0, 1, 2, 3] * 3

    runner = build(
        tmp_path,
        train_cfg=dict(type="CountingIterLoop", max_iters=6),
        default_hooks=dict(checkpoint=None),
        **no_val(),
    )
    runner.train()
    assert runner.train_loop.iters_at_call == [0, 1, 2, 3, 4, 5]


def test_num_batch_per_epoch_shortens_every_epoch(tmp_path):
    rec = toys.RecorderHook()
    runner = build(
        tmp_path,
        train_dataloader=toys.loader(num_batch_per_epoch=2),
        val_dataloader=toys.loader(shuffle=False, num_batch_per_epoch=1),
        custom_hooks=[rec],
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    assert len(runner.train_dataloader) == 2 and runner.max_iters == 4 and runner.iter == 4
    assert len(runner.val_dataloader.dataset) == 4  # one batch of 4
    assert len(rec.stages_named("after_val_iter")) == 2  # one batch per validation
    assert runner.train_dataloader.dataset.metainfo == dict(classes=("neg", "pos"))
    # more batches than the data has: the whole dataset
    runner = build(tmp_path, train_dataloader=toys.loader(num_batch_per_epoch=100))
    assert len(runner.train_dataloader) == 4


@pytest.mark.parametrize(
    "loader, error, text",
    [
        (dict(num_batch_per_epoch=0), ValueError, "positive int, but got 0"),
        (dict(num_batch_per_epoch="2"), TypeError, "positive int, but got '2'"),
    ],
)
def test_num_batch_per_epoch_errors(tmp_path, loader, error, text):
    runner = build(tmp_path, train_dataloader=toys.loader(**loader))
    with pytest.raises(error, match=text):
        runner.train()
    cfg = toys.loader(num_batch_per_epoch=1)
    del cfg["batch_size"]
    with pytest.raises(ValueError, match="num_batch_per_epoch needs the batch size"):
        build(tmp_path, train_dataloader=cfg).train()


def test_iteration_based_run_on_a_finite_sampler_warns_once(tmp_path, caplog):
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=False, max_iters=10, val_interval=100),
        default_hooks=dict(checkpoint=None),
        **no_val(),
    )
    with caplog.at_level(logging.WARNING, logger="fastopt.loops"):
        runner.train()
    restarts = [r for r in caplog.records if "Reach the end of the dataloader" in r.message]
    assert len(restarts) == 1 and "InfiniteSampler" in restarts[0].message  # 4 per pass: 2 restarts
    runner = build(
        tmp_path,
        train_dataloader=dict(toys.loader(), sampler=dict(type="InfiniteSampler")),
        train_cfg=dict(by_epoch=False, max_iters=10, val_interval=100),
        default_hooks=dict(checkpoint=None),
        **no_val(),
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastopt.loops"):
        runner.train()
    assert not [r for r in caplog.records if "Reach the end" in r.message]
