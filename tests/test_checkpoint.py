"""Checkpoints: atomic writes (a killed writer leaves the old file), weights_only loading,
retention, save_best, publishing, load_from, and the errors."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import runner_toys as toys
import torch
from runner_toys import build

from fastopt.fileio.checkpoint import (  # noqa: E402
    atomic_write,
    find_latest_checkpoint,
    load_checkpoint_file,
    save_checkpoint,
    to_weights_only,
)
from fastopt.hooks import CheckpointHook  # noqa: E402
from fastopt.runner import Runner  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


def ckpt_names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.pth"))


# ------------------------------------------------------------------ weights_only safety
def test_to_weights_only_converts_library_types():
    state = collections.OrderedDict(w=torch.ones(2))
    state._metadata = collections.OrderedDict({"": {"version": 1}})
    obj = {
        "array": np.arange(3, dtype=np.int32),
        "np_float": np.float32(0.5),
        "np_int": np.int64(7),
        "counter": collections.Counter([3, 3, 5]),
        "deque": collections.deque([1, 2], maxlen=4),
        "nested": [({"a": (1, 2.0, "x", None)},)],
        "state": state,
        "dtype": torch.float16,
    }
    out = to_weights_only(obj)
    assert torch.equal(out["array"], torch.tensor([0, 1, 2], dtype=torch.int32))
    assert out["np_float"] == 0.5 and type(out["np_float"]) is float
    assert out["np_int"] == 7 and type(out["np_int"]) is int
    assert out["counter"] == {3: 2, 5: 1} and type(out["counter"]) is dict
    assert out["deque"] == [1, 2]
    assert out["nested"] == [({"a": (1, 2.0, "x", None)},)]
    assert out["state"]._metadata == {"": {"version": 1}}


def test_to_weights_only_names_the_offending_entry():
    with pytest.raises(TypeError, match=r"checkpoint\['meta'\]\['hook'\]: .*Runner"):
        to_weights_only({"meta": {"hook": Runner}})


def test_save_checkpoint_round_trips_with_weights_only(tmp_path):
    path = tmp_path / "sub" / "ckpt.pth"
    save_checkpoint({"state_dict": {"w": torch.arange(4.0)}, "meta": {"k": np.float64(1.5)}}, path)
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["state_dict"]["w"], torch.arange(4.0)) and loaded["meta"]["k"] == 1.5
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pth"]  # no temporary file left


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "ckpt.pth"
    save_checkpoint({"n": 1}, path)

    def failing(f):
        f.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, failing)
    with pytest.raises(TypeError, match="cannot be stored"):
        save_checkpoint({"n": object()}, path)
    assert torch.load(path, weights_only=True) == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]


def test_loading_refuses_pickled_objects_with_an_explanation(tmp_path):
    path = tmp_path / "mmengine_style.pth"
    torch.save({"message_hub": collections.deque([1])}, path)  # not weights_only-loadable
    with pytest.raises(RuntimeError, match="weights_only=True.*refuses"):
        load_checkpoint_file(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint_file(tmp_path / "missing.pth")


def test_every_file_of_a_run_loads_with_weights_only(tmp_path):
    runner = build(
        tmp_path,
        param_scheduler=[dict(type="MultiStepLR", milestones=[1])],
        custom_hooks=[dict(type="EMAHook")],
        default_hooks=dict(
            checkpoint=dict(
                type="CheckpointHook",
                interval=1,
                save_best="acc",
                published_keys=["meta", "state_dict"],
            )
        ),
    )
    runner.train()
    files = list(tmp_path.glob("*.pth"))
    assert len(files) >= 4
    for path in files:
        ckpt = torch.load(path, weights_only=True)
        assert "state_dict" in ckpt and "meta" in ckpt
    full = torch.load(tmp_path / "epoch_2.pth", weights_only=True)
    assert {
        "meta",
        "state_dict",
        "message_hub",
        "optimizer",
        "param_schedulers",
        "rng_state",
        "train_dataloader",
        "ema_state_dict",
    } <= set(full)
    hub = full["message_hub"]
    assert hub["log_scalars"]["train/loss"]["log_history"][-1] == pytest.approx(
        runner.message_hub.get_scalar("train/loss").current()
    )


# ------------------------------------------------------------------- crash during a save
CRASH_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    sys.path.insert(0, {toys_dir!r})
    import runner_toys as toys
    from fastopt.runner import Runner

    torch.set_num_threads(1)
    real_save = torch.save
    saves = []

    def torn_save(obj, f, *args, **kwargs):
        # the second checkpoint: write half of it, then get killed
        saves.append(1)
        if len(saves) < 2:
            return real_save(obj, f, *args, **kwargs)
        import io
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        f.flush()
        print("WRITING", flush=True)
        time.sleep(120)

    torch.save = torn_save
    cfg = toys.make_cfg({work_dir!r}, model=dict(type="RunnerToyModel", dropout=0.3),
                        train_cfg=dict(by_epoch=True, max_epochs=3),
                        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1,
                                                           filename_tmpl="latest.pth")))
    Runner(**cfg).train()
    """
)


def test_killing_the_process_while_it_writes_keeps_the_previous_checkpoint(tmp_path):
    work = tmp_path / "killed"
    script = CRASH_SCRIPT.format(toys_dir=str(Path(toys.__file__).parent), work_dir=str(work))
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            output.append(line)
            if line.strip() == "WRITING":
                proc.send_signal(signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert any(line.strip() == "WRITING" for line in output), "".join(output)

    # the file being overwritten still holds the first epoch's checkpoint, complete
    latest = work / "latest.pth"
    ckpt = torch.load(latest, weights_only=True)
    assert (ckpt["meta"]["epoch"], ckpt["meta"]["iter"]) == (1, 4)
    assert find_latest_checkpoint(work) == str(latest)
    assert len(list(work.glob(".latest.pth.*.tmp"))) == 1  # the torn temporary file

    # resuming from it finishes exactly like an uninterrupted run
    overrides = dict(
        model=dict(type="RunnerToyModel", dropout=0.3),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", interval=1, filename_tmpl="latest.pth")
        ),
    )
    resumed = Runner(**toys.make_cfg(work, resume=True, **overrides))
    resumed.train()
    assert list(work.glob(".*.tmp")) == []  # cleaned up when training started again
    straight = Runner(**toys.make_cfg(tmp_path / "straight", **overrides))
    straight.train()
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


# ----------------------------------------------------------------------------- retention
@pytest.mark.parametrize("save_best", ["auto", "acc"])
def test_save_best_removes_the_previous_best_after_a_resume(tmp_path, save_best):
    """The best path restored on resume is found again even when 'auto' names the metric."""
    hook = dict(type="CheckpointHook", interval=1, save_best=save_best, max_keep_ckpts=1)
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=2),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.5, 0.6, 0.7]),
        default_hooks=dict(checkpoint=hook),
    ).train()
    assert "best_acc_epoch_2.pth" in ckpt_names(tmp_path)
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        resume=True,
        val_evaluator=dict(type="RunnerToyAccuracy", scores=[0.7]),
        default_hooks=dict(checkpoint=hook),
    ).train()
    assert [n for n in ckpt_names(tmp_path) if n.startswith("best_")] == ["best_acc_epoch_3.pth"]


def test_max_keep_ckpts_keeps_the_newest_and_survives_resume(tmp_path):
    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=5),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=3)),
        **dict(val_cfg=None, val_dataloader=None, val_evaluator=None),
    )
    runner.train()
    assert ckpt_names(tmp_path) == ["epoch_3.pth", "epoch_4.pth", "epoch_5.pth"]
    assert runner.message_hub.get_info("keep_ckpt_ids") == [3, 4, 5]
    assert Path(tmp_path, "last_checkpoint").read_text().splitlines()[0] == str(
        tmp_path / "epoch_5.pth"
    )
    # a resumed run with a smaller budget prunes the inherited list first
    resumed = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=6),
        resume=True,
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, max_keep_ckpts=1)),
        **dict(val_cfg=None, val_dataloader=None, val_evaluator=None),
    )
    resumed.train()
    assert ckpt_names(tmp_path) == ["epoch_6.pth"]


def test_interval_save_begin_save_last_by_iteration(tmp_path):
    build(
        tmp_path,
        train_cfg=dict(by_epoch=False, max_iters=11, val_interval=100),
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=4, save_begin=2)
        ),
    ).train()
    # MMEngine: save when (iter + 1 - save_begin) % 4 == 0 -> 2, 6, 10; plus the last one
    assert ckpt_names(tmp_path) == ["iter_10.pth", "iter_11.pth", "iter_2.pth", "iter_6.pth"]


def test_out_dir_gets_the_work_dir_name(tmp_path):
    out = tmp_path / "store"
    runner = build(
        tmp_path / "exp",
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, out_dir=str(out))),
    )
    runner.train()
    runner.train()  # nothing left to train; the directory must not become store/exp/exp
    assert next(h for h in runner.hooks if isinstance(h, CheckpointHook)).out_dir == str(
        out / "exp"
    )
    assert ckpt_names(out / "exp") == ["epoch_1.pth"]
    assert Path(tmp_path / "exp" / "last_checkpoint").read_text().splitlines()[0] == str(
        out / "exp" / "epoch_1.pth"
    )


# ------------------------------------------------------------------------------ save_best
@pytest.mark.parametrize(
    ("save_best", "rule", "scores", "best_file"),
    [
        ("acc", None, [0.5, 0.7, 0.6], "best_acc_epoch_2.pth"),  # 'acc' -> greater
        ("auto", None, [0.5, 0.4, 0.6], "best_acc_epoch_3.pth"),  # the first metric
        ("acc", "less", [0.5, 0.4, 0.6], "best_acc_epoch_2.pth"),
    ],
)
def test_save_best_keeps_only_the_best(tmp_path, save_best, rule, scores, best_file):
    runner = build(
        tmp_path,
        log_level="INFO",
        train_cfg=dict(by_epoch=True, max_epochs=3),
        val_evaluator=dict(type="RunnerToyAccuracy", scores=scores),
        default_hooks=dict(
            checkpoint=dict(
                type="CheckpointHook", interval=-1, save_best=save_best, rule=rule, save_last=False
            )
        ),
    )
    runner.train()
    assert ckpt_names(tmp_path) == [best_file]
    best = torch.load(tmp_path / best_file, weights_only=True)
    assert "optimizer" in best and "param_schedulers" not in best  # no schedulers configured
    assert runner.message_hub.get_info("best_ckpt") == str(tmp_path / best_file)
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert f"is saved to {best_file}." in log


def test_save_best_with_several_metrics_and_loss_rule(tmp_path):
    class TwoMetrics(toys.RunnerToyAccuracy):
        def compute_metrics(self, results):
            self.calls += 1
            return dict(acc=[0.5, 0.6, 0.4][self.calls - 1], loss=[0.9, 1.0, 0.2][self.calls - 1])

    runner = build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        val_evaluator=[TwoMetrics()],  # a list: a lone metric is refused, as in MMEngine
        default_hooks=dict(
            checkpoint=dict(
                type="CheckpointHook", interval=-1, save_best=["acc", "loss"], save_last=False
            )
        ),
    )
    runner.train()
    assert ckpt_names(tmp_path) == ["best_acc_epoch_2.pth", "best_loss_epoch_3.pth"]
    hub = runner.message_hub
    assert hub.get_info("best_score_acc") == 0.6 and hub.get_info("best_score_loss") == 0.2


def test_publish_keeps_only_published_keys(tmp_path):
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(
            checkpoint=dict(type="CheckpointHook", interval=1, published_keys="state_dict")
        ),
    ).train()
    published = [p for p in tmp_path.glob("epoch_1-*.pth")]
    assert len(published) == 1 and len(published[0].stem.split("-")[1]) == 8
    assert set(torch.load(published[0], weights_only=True)) == {"state_dict"}


# ----------------------------------------------------------------------- load_from / latest
def test_load_from_loads_weights_and_revises_module_prefix(tmp_path):
    source = build(tmp_path / "src", train_cfg=dict(by_epoch=True, max_epochs=1))
    source.train()
    ckpt = torch.load(tmp_path / "src" / "epoch_1.pth", weights_only=True)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in ckpt["state_dict"].items()}}
    wrapped["state_dict"]["module.extra.weight"] = torch.zeros(1)
    save_checkpoint(wrapped, tmp_path / "wrapped.pth")
    runner = build(
        tmp_path / "dst", log_level="INFO", load_from=str(tmp_path / "wrapped.pth"), test_cfg=None
    )
    runner.val()
    for key, value in source.model.state_dict().items():
        assert torch.equal(runner.model.state_dict()[key], value)
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert "unexpected key in source state_dict: extra.weight" in log
    assert runner.iter == 0  # weights only: no counters


def test_find_latest_checkpoint_cases(tmp_path):
    assert find_latest_checkpoint(tmp_path) is None
    (tmp_path / "epoch_3.pth").write_bytes(b"x")
    (tmp_path / "last_checkpoint").write_text("/somewhere/else/epoch_3.pth")
    assert find_latest_checkpoint(tmp_path) == str(tmp_path / "epoch_3.pth")  # moved work dir
    (tmp_path / "last_checkpoint").write_text("/somewhere/else/epoch_9.pth")
    assert find_latest_checkpoint(tmp_path) is None


def test_resume_from_an_explicit_path_and_a_mismatched_scheduler(tmp_path):
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=1),
        param_scheduler=[dict(type="MultiStepLR", milestones=[1])],
    ).train()
    runner = build(
        tmp_path / "other",
        train_cfg=dict(by_epoch=True, max_epochs=2),
        param_scheduler=[dict(type="StepLR", step_size=1)],
        resume=str(tmp_path / "epoch_1.pth"),
    )
    with pytest.raises(RuntimeError, match="scheduler is MultiStepLR but the config builds StepLR"):
        runner.train()
