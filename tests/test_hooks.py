"""Hooks: priorities and order, the hook-order printout, and what every built-in hook does."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

import pytest
import runner_toys as toys
import torch
from runner_toys import build

from fastopt.hooks import (  # noqa: E402
    CheckpointHook,
    EarlyStoppingHook,
    EMAHook,
    EmptyCacheHook,
    Hook,
    LoggerHook,
    Priority,
    ProfilerHook,
    SyncBuffersHook,
    get_priority,
)
from fastopt.model import unwrap_model as get_model  # noqa: E402
from fastopt.registry import HOOKS  # noqa: E402
from fastopt.runner import Runner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def hook_of(runner: Runner, cls: type) -> Hook:
    return next(h for h in runner.hooks if isinstance(h, cls))


# ----------------------------------------------------------------------------- priorities
def test_get_priority_accepts_names_in_any_case_ints_and_members():
    assert get_priority("HIGHEST") == 0
    assert get_priority("very_low") == 90
    assert get_priority("Normal") == 50
    assert get_priority(Priority.LOW) == 70
    assert get_priority(49) == 49
    assert [p.value for p in Priority] == [0, 10, 30, 40, 50, 60, 70, 90, 100]


@pytest.mark.parametrize(
    ("value", "error", "text"),
    [
        (101, ValueError, "between 0 and 100"),
        (-1, ValueError, "between 0 and 100"),
        ("URGENT", ValueError, "unknown priority 'URGENT'"),
        (1.5, TypeError, "float"),
        (True, TypeError, "True"),
    ],
)
def test_get_priority_rejects_bad_values(value, error, text):
    with pytest.raises(error, match=text):
        get_priority(value)


# -------------------------------------------------------------------------------- helpers
def test_hook_helpers_follow_mmengine_arithmetic():
    hook = Hook()
    runner = SimpleNamespace(epoch=3, iter=9, max_epochs=4, max_iters=10)
    assert hook.every_n_epochs(runner, 2)  # epoch index 3 ends the 4th epoch
    assert not hook.every_n_epochs(runner, 3)
    assert hook.every_n_epochs(runner, 3, start=1)
    assert not hook.every_n_epochs(runner, 2, start=5)  # before start
    assert not hook.every_n_epochs(runner, 0)
    assert hook.every_n_inner_iters(4, 5) and not hook.every_n_inner_iters(3, 5)
    assert hook.every_n_train_iters(runner, 5) and hook.every_n_train_iters(runner, 4, start=2)
    assert hook.end_of_epoch([0, 1, 2], 2) and not hook.end_of_epoch([0, 1, 2], 1)
    assert hook.is_last_train_epoch(runner) and hook.is_last_train_iter(runner)


def test_get_triggered_stages_counts_the_shared_bodies():
    class MyHook(Hook):
        def before_run(self, runner):
            pass

        def _after_iter(self, runner, batch_idx, data_batch=None, outputs=None, mode="train"):
            pass

    assert MyHook().get_triggered_stages() == [
        "before_run",
        "after_train_iter",
        "after_val_iter",
        "after_test_iter",
    ]
    assert Hook().get_triggered_stages() == []


# ---------------------------------------------------------------------- registration order
def test_hook_order_matches_mmengine_golden(tmp_path):
    runner = build(
        tmp_path,
        custom_hooks=[
            dict(type="EMAHook", priority=49),
            dict(type="EmptyCacheHook"),
            dict(type="RecorderHook"),
        ],
    )
    assert [type(h).__name__ for h in runner.hooks] == [
        "RuntimeInfoHook",
        "EMAHook",
        "IterTimerHook",
        "DistSamplerSeedHook",
        "EmptyCacheHook",
        "LoggerHook",
        "ParamSchedulerHook",
        "CheckpointHook",
        "RecorderHook",
    ]


def test_register_hook_priority_precedence_and_stable_ties(tmp_path):
    runner = build(tmp_path, default_hooks=dict(logger=None, checkpoint=None, timer=None))
    first, second, third = toys.RecorderHook(), toys.RecorderHook(), toys.RecorderHook()
    runner.register_hook(first, priority="normal")  # argument wins over the class attribute
    runner.register_hook(second, priority=50)  # same value: after the earlier one
    runner.register_hook(dict(type="RecorderHook", priority="HIGHEST"))  # config priority
    runner.register_hook(third, priority=Priority.VERY_HIGH)  # ties with RuntimeInfoHook
    names = [(type(h).__name__, h.priority) for h in runner.hooks]
    assert names == [
        ("RecorderHook", "HIGHEST"),
        ("RuntimeInfoHook", "VERY_HIGH"),
        ("RecorderHook", Priority.VERY_HIGH),
        ("DistSamplerSeedHook", "NORMAL"),
        ("RecorderHook", "normal"),
        ("RecorderHook", 50),
        ("ParamSchedulerHook", "LOW"),
    ]
    assert runner.hooks[4] is first and runner.hooks[5] is second and runner.hooks[2] is third


def test_default_hooks_none_removes_and_dict_replaces(tmp_path):
    runner = build(
        tmp_path,
        default_hooks=dict(
            timer=None,
            logger=dict(type="LoggerHook", interval=3),
            extra=dict(type="RecorderHook"),
        ),
    )
    names = [type(h).__name__ for h in runner.hooks]
    assert "IterTimerHook" not in names
    assert hook_of(runner, LoggerHook).interval == 3
    assert names[-1] == "RecorderHook"


def test_registration_errors_name_the_hook(tmp_path):
    with pytest.raises(ValueError, match="RecorderHook: priority must be between 0 and 100"):
        build(tmp_path, custom_hooks=[dict(type="RecorderHook", priority=300)])
    with pytest.raises(TypeError, match="hook should be an instance of Hook or dict"):
        build(tmp_path, custom_hooks=[object()])
    with pytest.raises(KeyError, match="NoSuchHook is not in the fastopt::hook registry"):
        build(tmp_path, custom_hooks=[dict(type="NoSuchHook")])


def test_hook_with_a_wrong_signature_is_reported_with_the_hook(tmp_path):
    class BadHook(Hook):
        def before_run(self):  # missing the runner argument
            pass

    runner = build(tmp_path, custom_hooks=[BadHook()])
    with pytest.raises(TypeError, match=r"takes 1 positional argument but 2 were given in BadHook"):
        runner.train()


def test_hook_order_printout_uses_mmengine_format(tmp_path):
    runner = build(
        tmp_path,
        log_level="INFO",
        custom_hooks=[dict(type="RecorderHook"), dict(type="EMAHook", priority=49)],
    )
    info = runner.get_hooks_info()
    expected = (
        "before_train_iter:\n"
        "(VERY_HIGH   ) RuntimeInfoHook                    \n"
        "(NORMAL      ) IterTimerHook                      \n"
        "(LOWEST      ) RecorderHook                       \n"
        " -------------------- "
    )
    assert expected in info
    assert (
        "after_train_iter:\n(VERY_HIGH   ) RuntimeInfoHook                    \n(49          ) EMAHook"
        in info
    )
    assert info.startswith("before_run:\n")
    # every stage that has hooks, in Hook.stages order
    stages = [line[:-1] for line in info.splitlines() if line.endswith(":")]
    assert stages == [s for s in Hook.stages if s in stages]
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert "Hooks will be executed in the following order:\nbefore_run:" in log


# ---------------------------------------------------------- hooks written for MMEngine
@HOOKS.register_module()
class SeedNewHook(Hook):
    """The mmselfsup tutorial hook (shared/seeds), with only its imports changed."""

    def __init__(self, a: int, b: int) -> None:
        self.a = a
        self.b = b

    def before_train_iter(
        self,
        runner,
        batch_idx: int,
        data_batch: Optional[Sequence[dict]] = None,  # noqa: UP045
    ) -> None:
        cur_iter = runner.iter
        get_model(runner.model).hyper_parameter = self.a * cur_iter + self.b


def test_a_hook_from_the_mmengine_tutorials_runs_unchanged(tmp_path):
    runner = build(
        tmp_path,
        custom_hooks=[dict(type="SeedNewHook", a=2, b=1, priority="ABOVE_NORMAL")],
        default_hooks=dict(checkpoint=None),
    )
    names = [type(h).__name__ for h in runner.hooks]
    assert names.index("SeedNewHook") == names.index("IterTimerHook") - 1  # 40 < 50
    runner.train()
    assert runner.model.hyper_parameter == 2 * 7 + 1


# --------------------------------------------------------------------------- default hooks
def test_runtime_info_and_timer_hooks_fill_the_message_hub(tmp_path):
    runner = build(tmp_path, default_hooks=dict(checkpoint=None))
    runner.train()
    hub = runner.message_hub
    assert hub.get_info("epoch") == 1 and hub.get_info("iter") == 7
    assert hub.get_info("max_epochs") == 2 and hub.get_info("max_iters") == 8
    assert hub.get_info("loop_stage") is None  # popped after training
    assert hub.get_info("seed") == 0 and hub.get_info("experiment_name") == runner.experiment_name
    assert hub.get_info("dataset_meta") == dict(classes=("neg", "pos"))
    assert len(hub.get_scalar("train/lr")) == 8 and hub.get_scalar("train/lr").current() == 0.1
    assert len(hub.get_scalar("train/loss")) == 8 and len(hub.get_scalar("train/acc")) == 8
    assert len(hub.get_scalar("train/time")) == 8 and len(hub.get_scalar("train/data_time")) == 8
    assert len(hub.get_scalar("val/acc")) == 2 and len(hub.get_scalar("val/time")) == 8
    assert hub.get_info("eta") >= 0


def test_sampler_seed_hook_sets_the_epoch_before_every_epoch(tmp_path):
    class SeenEpoch(Hook):
        priority = "LOWEST"

        def __init__(self):
            self.epochs = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.epochs.append(runner.train_dataloader.sampler.epoch)

    seen = SeenEpoch()
    runner = build(tmp_path, custom_hooks=[seen], train_cfg=dict(by_epoch=True, max_epochs=3))
    runner.train()
    assert seen.epochs == [0] * 4 + [1] * 4 + [2] * 4


def test_param_scheduler_hook_matches_mmengine_golden_trace(tmp_path):
    class LrTrace(Hook):
        def __init__(self):
            self.lrs = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.lrs.append(round(runner.optim_wrapper.get_lr()["lr"][0], 10))

    trace = LrTrace()
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=6),
        val_cfg=None,
        val_dataloader=None,
        val_evaluator=None,
        param_scheduler=[
            dict(
                type="LinearLR",
                start_factor=0.1,
                by_epoch=True,
                begin=0,
                end=1,
                convert_to_iter_based=True,
            ),
            dict(type="MultiStepLR", by_epoch=True, milestones=[3, 5]),
        ],
        custom_hooks=[trace],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=6)),
    )
    runner.train()
    assert trace.lrs[:4] == [0.01, 0.04, 0.07, 0.1]
    assert trace.lrs[4:12] == [0.1] * 8
    assert trace.lrs[12:20] == [0.01] * 8
    assert trace.lrs[20:] == [0.001] * 4
    states = torch.load(tmp_path / "epoch_6.pth", weights_only=True)["param_schedulers"]
    linear, multistep = states
    assert {
        k: linear[k]
        for k in ("begin", "end", "total_iters", "by_epoch", "last_step", "_global_step")
    } == dict(begin=0, end=4, total_iters=3, by_epoch=False, last_step=3, _global_step=24)
    assert multistep["milestones"] == {3: 1, 5: 1}
    assert (multistep["end"], multistep["last_step"], multistep["_global_step"]) == (6, 5, 6)


def test_param_scheduler_hook_steps_plateau_schedulers_with_metrics(tmp_path):
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.5, 0.5, 0.5]),
        param_scheduler=[
            dict(type="ReduceOnPlateauLR", monitor="acc", rule="greater", patience=0, factor=0.5)
        ],
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    # the 1st validation sets the best, the 2nd does not improve: halved; the 3rd comes after
    # the epoch step that reaches `end` (= max_epochs), where the scheduler no longer acts
    assert runner.optim_wrapper.get_lr()["lr"][0] == pytest.approx(0.05)


def test_val_and_test_before_train_with_schedulers_configured(tmp_path):
    """runner.val()/test() first: the schedulers are still configs, which the hook skips."""
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        test_dataloader=toys.loader(shuffle=False),
        test_cfg=dict(),
        test_evaluator=dict(type="RunnerToyAccuracy"),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.7, 0.5, 0.5, 0.5]),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.5, by_epoch=False, end=2),
            dict(type="ReduceOnPlateauLR", monitor="acc", rule="greater", patience=0, factor=0.5),
        ],
        default_hooks=dict(checkpoint=None),
    )
    assert runner.val() == {"acc": 0.7}
    assert set(runner.test()) == {"acc"}
    runner.train()
    # built by train(): the validations after epochs 1 and 2 do not improve on their best
    # (0.5 after 0.5): halved once; the last one is past `end` (= max_epochs)
    assert runner.optim_wrapper.get_lr()["lr"][0] == pytest.approx(0.05)


def test_val_before_train_with_save_best(tmp_path):
    """A validation outside training saves no best checkpoint (there is no run state yet);
    the training that follows saves its own."""
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=2),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.9, 0.5, 0.6]),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, save_best="auto")),
    )
    assert runner.val() == {"acc": 0.9}
    assert not list(tmp_path.glob("best_*.pth"))
    runner.train()
    assert [p.name for p in tmp_path.glob("best_*.pth")] == ["best_acc_epoch_2.pth"]


def test_param_scheduler_hook_skips_configs_of_every_form():
    hook = HOOKS.build(dict(type="ParamSchedulerHook"))
    for configs in (
        [dict(type="StepLR", step_size=1)],
        dict(type="StepLR", step_size=1),
        {"generator": [dict(type="StepLR", step_size=1)], "critic": dict(type="StepLR")},
    ):
        runner = SimpleNamespace(param_schedulers=configs)
        hook.after_val_epoch(runner, metrics={"acc": 1.0})
        hook.after_train_epoch(runner)
        hook.after_train_iter(runner, batch_idx=0)
    with pytest.raises(TypeError, match="param_schedulers should be a list"):
        hook.after_train_epoch(SimpleNamespace(param_schedulers="StepLR"))


def test_reduce_on_plateau_by_iteration_in_an_iteration_based_run(tmp_path):
    class LrAt(Hook):
        def __init__(self):
            self.lrs = []

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            self.lrs.append(runner.optim_wrapper.get_lr()["lr"][0])

    trace = LrAt()
    runner = build(
        tmp_path,
        train_dataloader=dict(toys.loader(), sampler=dict(type="InfiniteSampler")),
        train_cfg=dict(by_epoch=False, max_iters=12, val_interval=4),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.5, 0.4, 0.3]),
        param_scheduler=dict(
            type="ReduceOnPlateauLR", monitor="acc", rule="greater", patience=0, by_epoch=False
        ),
        custom_hooks=[trace],
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    # validations after iterations 4 (the best) and 8 (worse: cut by factor=0.1); the one
    # after iteration 12 comes at `end` (= max_iters, counted in iterations): no more cuts
    assert trace.lrs == pytest.approx([0.1] * 8 + [0.01] * 4)
    assert runner.optim_wrapper.get_lr()["lr"][0] == pytest.approx(0.01)


# ------------------------------------------------------------------------------------ EMA
def test_ema_hook_averages_swaps_for_validation_and_saves_both_weights(tmp_path):
    class Snapshots(Hook):
        priority = "LOWEST"  # after EMAHook

        def __init__(self):
            self.train = []
            self.val = []

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.train.append(runner.model.fc.weight.detach().clone())

        def before_val_iter(self, runner, batch_idx, data_batch=None):
            if batch_idx == 0:
                self.val.append(runner.model.fc.weight.detach().clone())

    snaps = Snapshots()
    momentum = 0.5
    runner = build(
        tmp_path,
        custom_hooks=[dict(type="EMAHook", momentum=momentum), snaps],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
    )
    runner.train()
    ema = snaps.train[0].clone()  # the first update copies the weights
    expected = [ema.clone()]
    for weight in snaps.train[1:]:
        ema = (1 - momentum) * ema + momentum * weight
        expected.append(ema.clone())
    ema_hook = hook_of(runner, EMAHook)
    torch.testing.assert_close(ema_hook.ema_model.module.fc.weight, expected[-1])
    # validation ran with the averaged weights (after epoch 1: iteration 3's average)
    torch.testing.assert_close(snaps.val[0], expected[3])
    torch.testing.assert_close(snaps.val[1], expected[7])
    # ... and the raw weights are back for training
    torch.testing.assert_close(runner.model.fc.weight, snaps.train[-1])
    ckpt = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    torch.testing.assert_close(ckpt["state_dict"]["fc.weight"], expected[-1])
    torch.testing.assert_close(ckpt["ema_state_dict"]["module.fc.weight"], snaps.train[-1])
    assert int(ckpt["ema_state_dict"]["steps"]) == 8


def test_ema_hook_begin_iter_follows_the_model_before_it_starts(tmp_path):
    runner = build(
        tmp_path,
        custom_hooks=[dict(type="EMAHook", momentum=0.5, begin_iter=100)],
        train_cfg=dict(by_epoch=False, max_iters=100, val_interval=1000),
        default_hooks=dict(checkpoint=None),
        val_cfg=None,
        val_dataloader=None,
        val_evaluator=None,
    )
    runner.train()
    ema = hook_of(runner, EMAHook).ema_model
    # 99 iterations copy the weights, the 100th (begin_iter) is the first average (a copy)
    torch.testing.assert_close(ema.module.fc.weight, runner.model.fc.weight)
    assert int(ema.steps) == 1


def test_ema_hook_argument_errors():
    with pytest.raises(ValueError, match="should not be both set"):
        EMAHook(begin_iter=1, begin_epoch=1)
    with pytest.raises(ValueError, match="begin_iter"):
        EMAHook(begin_iter=-1)


# ------------------------------------------------------------------- other optional hooks
def test_empty_cache_hook_runs_at_the_configured_points(tmp_path):
    after_epoch = EmptyCacheHook()
    every_iter = EmptyCacheHook(after_epoch=False, after_iter=True, before_epoch=True)
    runner = build(
        tmp_path, custom_hooks=[after_epoch, every_iter], default_hooks=dict(checkpoint=None)
    )
    runner.train()
    assert after_epoch.calls == 4  # 2 train + 2 val epochs
    assert every_iter.calls == 4 + 8 + 8  # before each epoch, after each train/val iteration


def test_sync_buffers_hook_is_a_no_op_in_one_process(tmp_path):
    hook = SyncBuffersHook()
    runner = build(tmp_path, custom_hooks=[hook], default_hooks=dict(checkpoint=None))
    runner.train()
    before = runner.model.bn.running_mean.clone()
    hook.after_train_epoch(runner)
    torch.testing.assert_close(runner.model.bn.running_mean, before)
    assert not hook.called_in_train


def test_early_stopping_stops_after_patience_and_remembers_its_state(tmp_path):
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=10),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.5, 0.55, 0.58, 0.9]),
        custom_hooks=[dict(type="EarlyStoppingHook", monitor="acc", patience=2, min_delta=0.1)],
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    # 0.55 and 0.58 are not 0.1 better than 0.5: stop after the third validation
    assert runner.epoch == 3
    assert runner.message_hub.get_info("early_stopping/acc/wait_count") == 2
    assert runner.message_hub.get_info("early_stopping/acc/best_score") == 0.5


@pytest.mark.parametrize(
    ("kwargs", "scores", "epochs"),
    [
        (dict(stopping_threshold=0.7), [0.5, 0.8, 0.9], 2),
        (dict(check_finite=True), [0.5, math.nan, 0.9], 2),
        (dict(rule="less", patience=1), [0.5, 0.45, 0.9], 2),  # 0.45 is not 0.1 lower
    ],
)
def test_early_stopping_threshold_nonfinite_and_rule(tmp_path, kwargs, scores, epochs):
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=5),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=scores),
        custom_hooks=[dict(type="EarlyStoppingHook", monitor="acc", **kwargs)],
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    assert runner.epoch == epochs


def test_early_stopping_errors(tmp_path):
    with pytest.raises(ValueError, match="Cannot infer the rule for speed"):
        EarlyStoppingHook(monitor="speed")
    with pytest.raises(ValueError, match='either "greater" or "less"'):
        EarlyStoppingHook(monitor="acc", rule="bigger")
    runner = build(
        tmp_path,
        custom_hooks=[dict(type="EarlyStoppingHook", monitor="mAP", strict=True)],
        default_hooks=dict(checkpoint=None),
    )
    with pytest.raises(RuntimeError, match="`mAP is not available"):
        runner.train()


def test_profiler_hook_writes_a_chrome_trace_into_the_log_dir(tmp_path):
    runner = build(
        tmp_path,
        custom_hooks=[dict(type="ProfilerHook", by_epoch=False, profile_times=2)],
        default_hooks=dict(checkpoint=None),
    )
    runner.train()
    trace = Path(runner.log_dir, "profiler", "trace_rank0.json")
    events = json.loads(trace.read_text())["traceEvents"]
    assert any("linear" in str(e.get("name", "")).lower() for e in events)


def test_profiler_hook_errors(tmp_path):
    with pytest.raises(ValueError, match="profile one epoch at most"):
        ProfilerHook(by_epoch=True, profile_times=2)
    with pytest.raises(ValueError, match="greater than 0"):
        ProfilerHook(profile_times=0)
    runner = build(
        tmp_path, custom_hooks=[dict(type="ProfilerHook", by_epoch=False, profile_times=9)]
    )
    with pytest.raises(ValueError, match="should not be greater than 8"):
        runner.train()


# ----------------------------------------------------------------------------- LoggerHook
def _train_lines(runner: Runner) -> list[str]:
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text().splitlines()
    return [line for line in log if "Epoch(train)" in line or "Iter(train)" in line]


@pytest.mark.parametrize(
    ("ignore_last", "logged"), [(True, ["[3/4]"]), (False, ["[3/4]", "[4/4]"])]
)
def test_logger_hook_interval_and_ignore_last(tmp_path, ignore_last, logged):
    runner = build(
        tmp_path,
        log_level="INFO",
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(
            logger=dict(type="LoggerHook", interval=3, ignore_last=ignore_last), checkpoint=None
        ),
    )
    runner.train()
    lines = _train_lines(runner)
    assert [line.split("Epoch(train) [1]")[1].split()[0] for line in lines] == logged
    steps = [
        json.loads(x)["step"]
        for x in Path(runner.log_dir, "vis_data", "scalars.json").read_text().splitlines()
    ]
    assert steps[: len(logged)] == [3, 4][: len(logged)]


def test_logger_hook_copies_logs_to_out_dir(tmp_path):
    out = tmp_path / "remote"
    runner = build(
        tmp_path / "work",
        log_level="INFO",
        default_hooks=dict(
            logger=dict(type="LoggerHook", out_dir=str(out), keep_local=False), checkpoint=None
        ),
    )
    runner.train()
    copied = out / "work" / f"{runner.timestamp}.log"
    assert "Epoch(train)" in copied.read_text()
    assert (out / "work" / "vis_data" / "scalars.json").is_file()
    assert not Path(runner.log_dir, f"{runner.timestamp}.log").exists()


def test_logger_hook_argument_errors():
    with pytest.raises(ValueError, match="interval must be a positive integer"):
        LoggerHook(interval=0)
    with pytest.raises(ValueError, match="keep_local=False would delete the logs"):
        LoggerHook(keep_local=False)
    with pytest.raises(ValueError, match="remote storage backend"):
        LoggerHook(backend_args=dict(backend="petrel"))


def test_logger_hook_argument_types_match_mmengine(tmp_path):
    with pytest.raises(
        TypeError, match=r"out_suffix should be a str or a sequence of str.*\[100\]"
    ):
        LoggerHook(out_suffix=[100])
    with pytest.raises(TypeError, match="out_suffix"):
        LoggerHook(out_suffix=None)  # type: ignore[arg-type]
    assert LoggerHook(out_suffix=".log").out_suffix == (".log",)
    assert LoggerHook(out_suffix=[".log", ".json"]).out_suffix == (".log", ".json")
    for name in ("interval", "interval_exp_name"):
        with pytest.raises(TypeError, match=f"{name} must be an integer"):
            LoggerHook(**{name: "100"})
        with pytest.raises(ValueError, match=f"{name} must be a positive integer"):
            LoggerHook(**{name: -1})
    with pytest.raises(TypeError, match="keep_local must be a bool"):
        LoggerHook(keep_local="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="out_dir must be a str, a path or None"):
        LoggerHook(out_dir=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="file_client_args should be"):
        LoggerHook(file_client_args=dict(backend="local"))
    assert LoggerHook(out_dir=tmp_path).out_dir == str(tmp_path)  # a Path, as MMEngine takes


def test_checkpoint_hook_takes_a_str_as_one_key():
    hook = CheckpointHook(greater_keys="acc", less_keys="err")
    assert (hook.greater_keys, hook.less_keys) == (["acc"], ["err"])
    assert CheckpointHook(save_best="err_rate", less_keys="err").rules == ["less"]
    # 'cat' matched 'a' or 'c' when the str was split into its characters
    with pytest.raises(ValueError, match="Cannot infer the rule for key cat"):
        CheckpointHook(save_best="cat", greater_keys="acc")
    with pytest.raises(TypeError, match='"greater_keys" should be a str or list of str'):
        CheckpointHook(greater_keys=[1])  # type: ignore[list-item]
    assert CheckpointHook(greater_keys=[]).greater_keys == []


def test_checkpoint_hook_argument_errors():
    with pytest.raises(ValueError, match="save_begin should not be less than 0"):
        CheckpointHook(save_begin=-1)
    with pytest.raises(ValueError, match='Only support one "auto"'):
        CheckpointHook(save_best=["auto", "acc"])
    with pytest.raises(KeyError, match="rule must be greater, less or None"):
        CheckpointHook(save_best="acc", rule="bigger")
    with pytest.raises(ValueError, match="Cannot infer the rule for key speed"):
        CheckpointHook(save_best="speed")
    with pytest.raises(ValueError, match='Number of "rule" must be 1'):
        CheckpointHook(save_best=["acc", "loss", "top1"], rule=["greater", "less"])
