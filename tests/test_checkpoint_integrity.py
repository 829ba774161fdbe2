"""Checkpoints you can trust (issue 19, points 1 and 4).

* A checkpoint is removed only after its successor is written, fsynced, renamed and recorded
  in ``last_checkpoint``: training processes are SIGKILLed at random moments of their saves
  (real processes, real kills), resumed, and must end bit for bit like an uninterrupted run.
* Every checkpoint carries a SHA-256 of its payload (zip comment, and in ``last_checkpoint``);
  a flipped byte is refused by every loader with an error naming the file and the newest
  intact checkpoint; ``torch.load`` still reads the files.
* Files get the mode ``open()`` would give them (0o666 less the umask), not mkstemp's 0600.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import runner_toys as toys
import torch
from conftest import fastopt_subprocess_env
from runner_toys import build

from fastopt.cli import main  # noqa: E402
from fastopt.fileio.checkpoint import (  # noqa: E402
    CHECKSUM_PREFIX,
    CorruptCheckpointError,
    checkpoint_checksums,
    load_checkpoint_file,
    read_last_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from fastopt.runner import Runner  # noqa: E402

DATA = Path(__file__).parent / "data" / "runner"


pytestmark = pytest.mark.usefixtures("one_thread")


def flip_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the largest tensor storage of a torch.save zip file."""
    with zipfile.ZipFile(path) as zf:
        info = max((i for i in zf.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = (
            int.from_bytes(f.read(2), "little"),
            int.from_bytes(f.read(2), "little"),
        )
        where = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
        f.seek(where)
        byte = f.read(1)
        f.seek(where)
        f.write(bytes([byte[0] ^ 0x10]))


# ------------------------------------------------------------------- killed during saves
def run_kill_trials(tmp_path: Path, trials: int, seed: int, via: str) -> dict:
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, str(DATA / "kill_saves.py"), str(tmp_path), str(trials), str(seed)]
        + [via, str(out)],
        env=fastopt_subprocess_env(str(DATA)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def check_kill_trials(result: dict) -> None:
    trials = result["trials"]
    last_iter = result["max_iters"]
    for t in trials:
        shown = json.dumps(t)
        # nothing completed is ever lost: a recorded checkpoint survives every kill
        if t["last_saved"] >= 1:
            assert t["record"] is not None and t["record_ok"], shown
            assert t["intact_after_kill"], shown
            if t["resumed_start"] is None:  # `fastopt train --resume` of a finished run
                assert t["via"] == "cli" and t["last_saved"] == last_iter, shown
            else:
                assert t["resumed_start"] >= t["last_saved"], shown
        # with max_keep_ckpts=1: the predecessor, the new one, a torn temporary file at most
        regular = [n for n in t["files_after_kill"] if n.startswith("iter_")]
        assert len(regular) <= 2, shown
        assert t["record"] is None or t["record"] in t["intact_after_kill"], shown
        # the resumed run finishes exactly like the uninterrupted one and cleans up
        assert t["resumed_status"] == 0, shown
        assert t["equal"] is True, shown
        assert t["temps_after_resume"] == [], shown
        after = t["files_after_resume"]
        assert [n for n in after if n.startswith("iter_")] == [f"iter_{last_iter}.pth"], shown
        assert len([n for n in after if n.startswith("best_")]) == 1, shown
    killed = [t for t in trials if t["killed"]]
    assert len(killed) >= 0.5 * len(trials), json.dumps(trials)
    assert any(t["temps_after_kill"] for t in killed), "no kill hit a file being written"


# a soak of kills during saves (about 30 s): CI runs it (`pytest -m slow`)
@pytest.mark.slow
def test_sigkill_during_saves_loses_nothing(tmp_path):
    """20 real kills at random moments of the save sequence (~30 s on 2 cores)."""
    result = run_kill_trials(tmp_path, trials=20, seed=1919, via="mixed")
    check_kill_trials(result)
    assert len(result["trials"]) >= 20


def test_a_shared_file_name_is_never_removed_as_its_own_predecessor(tmp_path):
    # a template without {} gives every step the same name: rotation must not remove it
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(
            checkpoint=dict(
                type="CheckpointHook", interval=1, max_keep_ckpts=1, filename_tmpl="latest.pth"
            )
        ),
    ).train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["latest.pth"]
    assert torch.load(tmp_path / "latest.pth", weights_only=True)["meta"]["epoch"] == 3


def test_a_resumed_run_removes_what_an_interrupted_rotation_left(tmp_path):
    # epoch_2.pth lists epoch_1 as still to be removed (keep_ckpt_ids [1, 2]); put epoch_1
    # back as a kill between the record and the removal would have left it
    hook = dict(type="CheckpointHook", interval=1, max_keep_ckpts=1)
    no_val = dict(val_cfg=None, val_dataloader=None, val_evaluator=None)
    build(tmp_path / "a", train_cfg=dict(by_epoch=True, max_epochs=1), **no_val).train()
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=2),
        default_hooks=dict(checkpoint=hook),
        **no_val,
    ).train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_2.pth"]
    hub = torch.load(tmp_path / "epoch_2.pth", weights_only=True)["message_hub"]
    assert hub["runtime_info"]["keep_ckpt_ids"] == [1, 2]
    shutil.copy(tmp_path / "a" / "epoch_1.pth", tmp_path / "epoch_1.pth")
    build(
        tmp_path,
        train_cfg=dict(by_epoch=True, max_epochs=3),
        resume=True,
        default_hooks=dict(checkpoint=hook),
        **no_val,
    ).train()
    assert sorted(p.name for p in tmp_path.glob("*.pth")) == ["epoch_3.pth"]


def test_a_best_written_just_before_a_kill_is_adopted_by_the_resumed_run(tmp_path):
    """The state a kill leaves between a new best and the rewrite of its step's regular
    checkpoint: epoch_2.pth (written before the validation) names best_acc_epoch_1 (0.5),
    and best_acc_epoch_2 (0.6) is on disk. Training does not depend on the scores, so the
    two runs below hold the same weights; B's files plus A's new best are that state."""

    def run(work: Path, scores: list[float], epochs: int, **kwargs) -> None:
        build(
            work,
            train_cfg=dict(by_epoch=True, max_epochs=epochs),
            val_evaluator=dict(type="RunnerToyAccuracy", scores=scores),
            default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1, save_best="acc")),
            **kwargs,
        ).train()

    run(tmp_path / "a", [0.5, 0.6], 2)
    run(tmp_path / "b", [0.5, 0.4], 2)
    shutil.copy(tmp_path / "a" / "best_acc_epoch_2.pth", tmp_path / "b")
    run(tmp_path / "b", [0.55], 3, resume=True)  # 0.55 beats the recorded 0.5, not 0.6
    bests = sorted(p.name for p in (tmp_path / "b").glob("best_*.pth"))
    assert bests == ["best_acc_epoch_2.pth"]
    hub = torch.load(tmp_path / "b" / "epoch_3.pth", weights_only=True)["message_hub"]
    assert hub["runtime_info"]["best_score"] == 0.6
    assert hub["runtime_info"]["best_ckpt"] == str(tmp_path / "b" / "best_acc_epoch_2.pth")


# --------------------------------------------------------------------------- checksums
def test_the_checksum_is_in_the_zip_comment_and_torch_load_still_works(tmp_path):
    path = tmp_path / "ckpt.pth"
    state = {"state_dict": {"w": torch.arange(1000.0)}, "meta": {"epoch": 1}}
    digest = save_checkpoint(state, path)
    data = path.read_bytes()
    comment = zipfile.ZipFile(path).comment
    assert comment == CHECKSUM_PREFIX + digest.encode()
    # the checksum is the SHA-256 of what torch.save wrote: the file without its comment
    payload = data[: -len(comment) - 2] + b"\0\0"
    assert hashlib.sha256(payload).hexdigest() == digest
    for mmap in (False, True):
        loaded = torch.load(path, weights_only=True, mmap=mmap)
        assert torch.equal(loaded["state_dict"]["w"], state["state_dict"]["w"])
    assert verify_checkpoint(path) == digest
    assert checkpoint_checksums(path) == (digest, digest)


def test_a_flipped_byte_is_refused_naming_the_file_and_an_intact_one(tmp_path):
    good, bad = tmp_path / "epoch_1.pth", tmp_path / "epoch_2.pth"
    save_checkpoint({"state_dict": {"w": torch.zeros(4096)}}, good)
    save_checkpoint({"state_dict": {"w": torch.zeros(4096)}}, bad)
    flip_tensor_byte(bad)
    # what used to happen: torch.load reads the damaged tensor without a word
    assert torch.load(bad, weights_only=True)["state_dict"]["w"].abs().sum() > 0
    with pytest.raises(CorruptCheckpointError) as info:
        load_checkpoint_file(bad)
    message = str(info.value)
    assert f"checkpoint {bad} is corrupt" in message and "SHA-256" in message
    assert f"the newest intact checkpoint there is {good}" in message
    assert info.value.intact == str(good)
    flip_tensor_byte(good)
    with pytest.raises(CorruptCheckpointError, match="no other checkpoint in .* is intact"):
        load_checkpoint_file(bad)


def test_files_without_a_checksum_still_load_and_the_record_can_vouch(tmp_path):
    path = tmp_path / "mmengine.pth"
    torch.save({"state_dict": {"w": torch.ones(3)}}, path)  # as MMEngine / older fastopt
    assert verify_checkpoint(path) is None
    assert torch.equal(load_checkpoint_file(path)["state_dict"]["w"], torch.ones(3))
    whole = hashlib.sha256(path.read_bytes()).hexdigest()
    assert verify_checkpoint(path, expected=whole) == whole
    with pytest.raises(CorruptCheckpointError, match="recorded in last_checkpoint"):
        verify_checkpoint(path, expected="0" * 64)


def test_a_file_replaced_after_its_record_is_used_with_a_warning(tmp_path, caplog):
    # a kill between the rename and the record write, when a step's name is saved twice
    path = tmp_path / "latest.pth"
    first = save_checkpoint({"n": torch.ones(2)}, path)
    second = save_checkpoint({"n": torch.zeros(2)}, path)
    with caplog.at_level("WARNING", logger="fastopt.fileio.checkpoint"):
        assert verify_checkpoint(path, expected=first) == second
    assert "rewritten after last_checkpoint recorded it" in caplog.text


def test_last_checkpoint_records_path_and_checksum_and_reads_plain_paths(tmp_path):
    runner = build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1))
    runner.train()
    lines = (tmp_path / "last_checkpoint").read_text().splitlines()
    assert lines[0] == str(tmp_path / "epoch_1.pth")  # the first line: MMEngine's whole file
    assert lines[1] == f"sha256={checkpoint_checksums(tmp_path / 'epoch_1.pth').stored}"
    record = read_last_checkpoint(tmp_path)
    assert record == (str(tmp_path / "epoch_1.pth"), lines[1].split("=")[1])
    (tmp_path / "last_checkpoint").write_text(str(tmp_path / "epoch_1.pth"))  # MMEngine's
    assert read_last_checkpoint(tmp_path) == (str(tmp_path / "epoch_1.pth"), None)
    resumed = build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=2), resume=True)
    resumed.train()
    assert resumed.iter == 8


def test_resume_refuses_a_corrupt_latest_checkpoint_and_names_the_intact_one(tmp_path):
    build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=3)).train()
    flip_tensor_byte(tmp_path / "epoch_3.pth")
    runner = build(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=4), resume=True)
    with pytest.raises(CorruptCheckpointError) as info:
        runner.train()
    assert str(tmp_path / "epoch_3.pth") in str(info.value)
    assert info.value.intact == str(tmp_path / "epoch_2.pth")  # best/published not resumable
    # load_from (weights only) verifies too
    other = build(tmp_path / "other", load_from=str(tmp_path / "epoch_3.pth"), test_cfg=None)
    with pytest.raises(CorruptCheckpointError, match="epoch_3.pth is corrupt"):
        other.val()


def test_publishing_names_the_file_after_its_checksum_and_refuses_a_corrupt_source(tmp_path):
    hook = dict(type="CheckpointHook", interval=1, published_keys=["meta", "state_dict"])
    build(
        tmp_path, train_cfg=dict(by_epoch=True, max_epochs=1), default_hooks=dict(checkpoint=hook)
    ).train()
    (published,) = tmp_path.glob("epoch_1-*.pth")
    sums = checkpoint_checksums(published)
    assert sums.stored == sums.actual and published.stem.endswith("-" + sums.stored[:8])


def _toy_config(tmp_path: Path, **overrides) -> Path:
    path = tmp_path / "toy_cfg.py"
    cfg = toys.make_cfg(tmp_path / "work", **overrides)
    path.write_text("".join(f"{k} = {v!r}\n" for k, v in cfg.items()))
    return path


def _error_line(capsys, command: str) -> str:
    err = [li for li in capsys.readouterr().err.splitlines() if "error:" in li]
    assert len(err) == 1, err
    assert err[0].startswith(f"fastopt {command}: error: ")
    return err[0]


def test_the_commands_refuse_a_corrupt_checkpoint_and_name_the_intact_one(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    config = _toy_config(tmp_path, train_cfg=dict(by_epoch=True, max_epochs=2))
    work = tmp_path / "work"
    assert main(["train", str(config)]) == 0
    capsys.readouterr()
    flip_tensor_byte(work / "epoch_2.pth")
    before = {p.name: p.read_bytes() for p in work.glob("*.pth")}

    assert main(["train", str(config), "--resume"]) == 1
    line = _error_line(capsys, "train")
    assert "work/epoch_2.pth is corrupt" in line
    assert "the newest intact checkpoint there is work/epoch_1.pth" in line
    assert "--resume work/epoch_1.pth" in line

    assert main(["test", str(config), str(work / "epoch_2.pth")]) == 1
    line = _error_line(capsys, "test")
    assert "work/epoch_2.pth is corrupt" in line and "work/epoch_1.pth" in line
    assert {p.name: p.read_bytes() for p in work.glob("*.pth")} == before  # nothing changed

    # the intact one it names works
    assert main(["train", str(config), "--resume", "work/epoch_1.pth"]) == 0


# ---------------------------------------------------------------------------- file mode
@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_files_get_the_mode_open_would_give_them(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        hook = dict(type="CheckpointHook", interval=1, published_keys=["state_dict"])
        cfg = toys.make_cfg(
            tmp_path,
            train_cfg=dict(by_epoch=True, max_epochs=1),
            default_hooks=dict(checkpoint=hook),
        )
        from fastopt.config import Config

        runner = Runner(**cfg, cfg=Config(dict(cfg)))
        runner.train()
        with open(tmp_path / "plain.txt", "w") as f:  # the reference: what open() gives
            f.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "plain.txt").st_mode) == mode
    checkpoints = sorted(p.name for p in tmp_path.glob("*.pth"))
    assert checkpoints[1] == "epoch_1.pth" and checkpoints[0].startswith("epoch_1-")  # published
    dumped = list(tmp_path.glob("*.py"))  # the config, dumped atomically too
    assert len(dumped) == 1
    files = [tmp_path / n for n in checkpoints] + [tmp_path / "last_checkpoint", *dumped]
    for path in files:
        assert stat.S_IMODE(os.stat(path).st_mode) == mode, path
