"""One run per work dir, no trace of a failed start, and what a resume with a changed config
ignores (fastopt.commands.work_dir, resume_drift in fastopt.commands.train)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fastopt_subprocess_env

from fastopt.cli import main
from fastopt.commands import train as train_command
from fastopt.commands.work_dir import LOCK_NAME, exclusive
from fastopt.config import Config

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn_sgd_cosine.py"
TINY = [
    "train_cfg.max_epochs=2",
    "train_dataloader.dataset.num_samples=64",
    "train_dataloader.batch_size=32",
    "train_dataloader.dataset.image_size=16",
    "val_dataloader.dataset.num_samples=32",
    "val_dataloader.dataset.image_size=16",
    "default_hooks.logger.interval=1",
]


def _train(work: Path, *options: str) -> int:
    return main(["train", str(CONFIG), "--work-dir", str(work), "--cfg-options", *TINY, *options])


def _listing(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _holder_process(work: Path) -> subprocess.Popen:
    """A child process holding the work dir's lock until killed."""
    code = (
        "import sys, time\n"
        "from fastopt.commands.work_dir import exclusive\n"
        "with exclusive(sys.argv[1]):\n"
        "    print('holding', flush=True)\n"
        "    time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(work)],
        env=fastopt_subprocess_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


def test_a_second_run_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    work = tmp_path / "work"
    holder = _holder_process(work)
    try:
        before = _listing(work)
        assert _train(work) == 1
        err = capsys.readouterr().err
        assert "is in use by another fastopt run" in err
        assert f"PID {holder.pid} on {socket.gethostname()}" in err
        assert _listing(work) == before  # nothing written, the holder's record intact
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # SIGKILL left the lock file; the kernel released the lock with the process
    assert json.loads((work / LOCK_NAME).read_text())["pid"] == holder.pid
    assert _train(work) == 0
    err = capsys.readouterr().err
    assert f"taking over the lock left by a run that is no longer running (PID {holder.pid}" in err
    assert not (work / LOCK_NAME).exists()  # released at the end of the run
    assert (work / "epoch_2.pth").is_file()


def test_the_lock_is_held_while_training(tmp_path):
    """A real `fastopt train` child holds it: this process cannot take it meanwhile."""
    work = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastopt", "train", str(CONFIG), "--work-dir", str(work)]
        + ["--cfg-options", *TINY[1:], "train_cfg.max_epochs=500"],  # long enough
        env=fastopt_subprocess_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(work.glob("*/*.log")) and proc.poll() is None:  # training has started
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert proc.poll() is None
        with pytest.raises(train_command.CommandError, match=f"PID {proc.pid} on "):
            with exclusive(str(work)):
                pass
    finally:
        proc.kill()
        proc.wait()


def test_a_failed_start_leaves_no_new_work_dir(tmp_path, capsys):
    work = tmp_path / "new" / "nested" / "work"
    assert _train(work, "train_dataloader.dataset.num_samples=-5") == 1
    assert "num_samples must be a positive int" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()  # neither the work dir nor its new parents


def test_a_failed_start_leaves_an_existing_work_dir_as_it_was(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    before = _listing(work)
    assert _train(work, "model.num_classes='abc'") == 1
    capsys.readouterr()
    assert _listing(work) == before and sorted(os.listdir(work)) == ["notes.txt"]


def test_a_failed_resume_leaves_the_run_as_it_was(tmp_path, capsys):
    work = tmp_path / "work"
    assert _train(work) == 0
    before = _listing(work)
    assert _train(work, "train_cfg.max_epochs=3", "model.num_classes='abc'", "--resume") == 1
    capsys.readouterr()
    assert _listing(work) == before


def _checkpoint_config(**changes: object) -> str:
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict(changes)
    return cfg.pretty_text


def test_resume_drift_names_each_ignored_or_inexact_key():
    cfg = Config.fromfile(str(CONFIG))
    checkpoint = {
        "meta": {
            "cfg": _checkpoint_config(
                **{"optim_wrapper.optimizer.lr": 0.3, "train_dataloader.batch_size": 16}
            )
        }
    }
    notes = train_command.resume_drift(checkpoint, cfg)
    assert len(notes) == 3, notes
    (lr,) = [n for n in notes if "optimizer.lr" in n]
    (batch,) = [n for n in notes if "batch_size" in n]
    (fresh,) = [n for n in notes if "optimizer state" in n]
    assert "optim_wrapper.optimizer.lr is 0.2 (the checkpoint's config: 0.3): ignored" in lr
    assert "train_dataloader.batch_size is " in batch and "(the checkpoint's config: 16)" in batch
    assert "epoch length" in batch
    assert "no optimizer state (saved with save_optimizer=False)" in fresh
    # an unchanged config with the optimizer state: nothing to say
    same = {"meta": {"cfg": cfg.pretty_text}, "optimizer": {}}
    assert train_command.resume_drift(same, cfg) == []


def test_resume_drift_does_not_run_the_checkpoints_config(tmp_path):
    """A checkpoint is data: its config text is read as literals, never executed."""
    marker = tmp_path / "ran"
    call = f"__import__('os').system('touch {marker}')"
    text = (
        f"import os\nos.system('touch {marker}')\noptim_wrapper = dict(optimizer=dict(lr={call}))\n"
    )
    notes = train_command.resume_drift(
        {"meta": {"cfg": text}, "optimizer": {}}, Config.fromfile(str(CONFIG))
    )
    assert not marker.exists()
    (lr,) = [n for n in notes if "optimizer.lr" in n]
    assert f"(the checkpoint's config: {call!r})" in lr


def test_a_failed_test_command_leaves_the_run_as_it_was(tmp_path, capsys):
    work = tmp_path / "work"
    assert _train(work) == 0
    before = _listing(work)
    args = ["test", str(CONFIG), str(work / "epoch_2.pth"), "--work-dir", str(work)]
    # the model builds, the evaluation's data does not
    bad = ["--cfg-options", *TINY, "test_dataloader.dataset.num_samples=-5"]
    assert main(args + bad) == 1
    assert "num_samples must be a positive int" in capsys.readouterr().err
    assert _listing(work) == before
    assert main(args + ["--cfg-options", *TINY]) == 0  # a good one adds its log dir
    assert len(_listing(work)) > len(before)
