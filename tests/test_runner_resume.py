"""Exact resume: N iterations straight == k iterations, a crash, a resume, and the rest.

Bitwise on CPU: model, optimizer, schedulers, loss scaler, EMA, RNG (dropout), the shuffling
sampler's order and the data loader position -- which is reached without loading the batches
already trained on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import runner_toys as toys
import torch

from fastopt.hooks import EMAHook, Hook  # noqa: E402
from fastopt.runner import Runner  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def cfg(work_dir: Path, **overrides: Any) -> dict[str, Any]:
    base = dict(
        model=dict(type="RunnerToyModel", dropout=0.3),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        optim_wrapper=dict(
            optimizer=dict(type="AdamW", lr=0.01, weight_decay=0.01),
            clip_grad=dict(max_norm=1.0),
        ),
        param_scheduler=[
            dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=5),
            dict(type="MultiStepLR", milestones=[2], by_epoch=True),
        ],
    )
    base.update(overrides)
    return toys.make_cfg(work_dir, **base)


def run(work_dir: Path, crash: toys.CrashAfter | None = None, **overrides: Any) -> Runner:
    hooks = list(overrides.pop("custom_hooks", []))
    if crash is not None:
        hooks.append(crash)
    runner = Runner(**cfg(work_dir, custom_hooks=hooks, **overrides))
    if crash is None:
        runner.train()
    else:
        with pytest.raises(toys.Crash):
            runner.train()
    return runner


def assert_same_state(a: Runner, b: Runner) -> None:
    state_a, state_b = a.model.state_dict(), b.model.state_dict()
    assert list(state_a) == list(state_b)
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), f"model {key} differs"
    opt_a, opt_b = a.optim_wrapper.state_dict(), b.optim_wrapper.state_dict()
    for pid, state in opt_a["state"].items():
        for key, value in state.items():
            other = opt_b["state"][pid][key]
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(other)), (
                f"optimizer {pid}.{key}"
            )
    assert opt_a["param_groups"] == opt_b["param_groups"]
    assert opt_a.get("loss_scaler") == opt_b.get("loss_scaler")
    assert [s.state_dict() for s in a.param_schedulers] == [
        s.state_dict() for s in b.param_schedulers
    ]
    assert (a.epoch, a.iter) == (b.epoch, b.iter)


def resume_and_finish(work_dir: Path, **overrides: Any) -> Runner:
    runner = Runner(**cfg(work_dir, resume=overrides.pop("resume", True), **overrides))
    runner.train()
    return runner


def test_resume_at_an_epoch_boundary_is_bitwise_exact(tmp_path):
    straight = run(tmp_path / "straight", custom_hooks=[dict(type="EMAHook", momentum=0.2)])
    run(
        tmp_path / "split",
        crash=toys.CrashAfter(4, stage="epoch"),
        custom_hooks=[dict(type="EMAHook", momentum=0.2)],
    )
    resumed = resume_and_finish(
        tmp_path / "split", custom_hooks=[dict(type="EMAHook", momentum=0.2)]
    )
    assert_same_state(straight, resumed)
    ema = [
        next(h for h in r.hooks if isinstance(h, EMAHook)).ema_model for r in (straight, resumed)
    ]
    for x, y in zip(ema[0].state_dict().values(), ema[1].state_dict().values()):
        assert torch.equal(x, y)
    # the resumed run loaded only the 8 remaining batches (+ 2 validations of 16 samples)
    assert resumed.train_dataloader.dataset.gets == 8 * 4
    assert resumed.val_dataloader.dataset.gets == 2 * 16


def test_resume_in_the_middle_of_an_epoch_skips_without_loading(tmp_path):
    checkpoint = dict(checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=2))
    straight = run(
        tmp_path / "straight",
        default_hooks=checkpoint,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9), accumulative_counts=2),
    )
    split_cfg = dict(
        default_hooks=checkpoint,
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1, momentum=0.9), accumulative_counts=2),
    )
    run(tmp_path / "split", crash=toys.CrashAfter(6), **split_cfg)
    rec = toys.RecorderHook()
    resumed = resume_and_finish(tmp_path / "split", custom_hooks=[rec], **split_cfg)
    assert_same_state(straight, resumed)
    # epoch 1 continued at its third batch: batch_idx 2, 3, then epoch 2
    first = rec.stages_named("before_train_iter")[:3]
    assert first == [
        ("before_train_iter", 1, 6, 2),
        ("before_train_iter", 1, 7, 3),
        ("before_train_iter", 2, 8, 0),
    ]
    assert resumed.train_dataloader.dataset.gets == 6 * 4


@pytest.mark.parametrize("sampler", ["InfiniteSampler", "DefaultSampler"])
def test_iteration_based_resume_is_exact(tmp_path, sampler):
    overrides = dict(
        train_cfg=dict(by_epoch=False, max_iters=11, val_interval=5),
        train_dataloader=dict(toys.loader(), sampler=dict(type=sampler, shuffle=True)),
        param_scheduler=[dict(type="CosineAnnealingLR", by_epoch=False, T_max=11, eta_min=0.001)],
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=3)),
    )
    straight = run(tmp_path / "straight", **overrides)
    run(tmp_path / "split", crash=toys.CrashAfter(6), **overrides)
    resumed = resume_and_finish(tmp_path / "split", **overrides)
    assert_same_state(straight, resumed)
    assert resumed.train_dataloader.dataset.gets == 5 * 4


def test_resume_with_a_fused_optimizer_and_loss_scaling(tmp_path):
    overrides = dict(
        optim_wrapper=dict(
            type="AmpOptimWrapper",
            dtype="float16",
            loss_scale=dict(init_scale=256.0, growth_interval=3),  # grows during the run
            optimizer=dict(type="FusedAdamW", lr=0.01, weight_decay=0.01),
        ),
    )
    straight = run(tmp_path / "straight", **overrides)
    run(tmp_path / "split", crash=toys.CrashAfter(4, stage="epoch"), **overrides)
    saved = torch.load(tmp_path / "split" / "epoch_1.pth", weights_only=True)
    assert saved["optimizer"]["loss_scaler"]["_growth_tracker"] == 1  # mid-interval
    resumed = resume_and_finish(tmp_path / "split", **overrides)
    assert resumed.optim_wrapper.state_dict()["loss_scaler"]["scale"] == 256.0 * 2**4
    assert_same_state(straight, resumed)


def test_resume_from_the_best_checkpoint(tmp_path):
    overrides = dict(
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=2, save_best="acc")),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.9, 0.5, 0.5]),
    )
    straight = run(tmp_path / "straight", **overrides)
    run(tmp_path / "split", crash=toys.CrashAfter(4, stage="val"), **overrides)
    best = tmp_path / "split" / "best_acc_epoch_1.pth"
    ckpt = torch.load(best, weights_only=True)
    assert {"optimizer", "param_schedulers", "rng_state"} <= set(ckpt)
    assert not (tmp_path / "split" / "epoch_1.pth").exists()  # interval 2: no regular one yet
    resumed = resume_and_finish(tmp_path / "split", resume=str(best), **overrides)
    assert_same_state(straight, resumed)


def test_lr_after_resume_is_not_warmed_up_again(tmp_path):
    # MMEngine#1542: schedulers built after loading re-applied LinearLR's start factor
    overrides = dict(
        param_scheduler=[dict(type="LinearLR", start_factor=0.1, by_epoch=False, begin=0, end=20)],
        train_cfg=dict(by_epoch=True, max_epochs=2),
    )
    run(tmp_path, crash=toys.CrashAfter(4, stage="epoch"), **overrides)
    saved = torch.load(tmp_path / "epoch_1.pth", weights_only=True)
    lr_at_save = saved["optimizer"]["param_groups"][0]["lr"]
    runner = Runner(**cfg(tmp_path, resume=True, **overrides))

    class FirstLr(Hook):
        def __init__(self):
            self.lr = None

        def before_train_iter(self, runner, batch_idx, data_batch=None):
            if self.lr is None:
                self.lr = runner.optim_wrapper.get_lr()["lr"][0]

    first = FirstLr()
    runner.register_hook(first)
    runner.train()
    assert first.lr == lr_at_save == pytest.approx(0.01 * (0.1 + 0.9 * 4 / 19))


def test_resume_true_without_checkpoint_starts_from_scratch(tmp_path):
    runner = Runner(
        **cfg(tmp_path, resume=True, log_level="INFO", train_cfg=dict(by_epoch=True, max_epochs=1))
    )
    runner.train()
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert f"No checkpoint found in {tmp_path}: training from scratch." in log
    assert runner.iter == 4
