"""``fastopt train`` / ``test`` / ``plot``: a whole run through the command, and bad input.

The run (train, test, resume, plot) uses real child processes, started the way a user starts
them. Each kind of bad input must give one clear error line on stderr (what and where), a
non-zero exit status, and leave every file of an existing run as it was; most of those cases
call the command's entry point in this process (same code, no interpreter start-up), a few
run as child processes to check the real exit status and stderr.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import fastopt_subprocess_env

from fastopt.cli import main
from fastopt.commands import plot

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cnn_sgd_cosine.py"
# a quick version of the default example: epochs of 32 batches of 24x24 images
QUICK = [
    "train_dataloader.dataset.num_samples=1024",
    "train_dataloader.batch_size=32",
    "train_dataloader.dataset.image_size=24",
    "val_dataloader.dataset.num_samples=200",
    "val_dataloader.dataset.image_size=24",
    "test_dataloader.dataset.num_samples=200",
    "test_dataloader.dataset.image_size=24",
    "default_hooks.logger.interval=4",
    "randomness.seed=0",
]


def _fastopt(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastopt", *map(str, args)],
        cwd=cwd,
        env=fastopt_subprocess_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _summary(stdout: str) -> dict[str, str]:
    """The `name: value` lines of the summary printed at the end of `fastopt train`."""
    lines = stdout[stdout.index("fastopt train: finished") :].splitlines()[1:]
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 2-epoch run of the default example, made by `fastopt train` (read only)."""
    cwd = tmp_path_factory.mktemp("run")
    proc = _fastopt(cwd, "train", CONFIG, "--cfg-options", "train_cfg.max_epochs=2", *QUICK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (cwd / "stdout.txt").write_text(proc.stdout)
    return cwd


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the finished run's work dir (the error tests must not share it)."""
    work = tmp_path / "work_dirs" / "cnn_sgd_cosine"
    shutil.copytree(run_dir / "work_dirs" / "cnn_sgd_cosine", work)
    return work


# ------------------------------------------------------------------------------ a whole run
def test_train_prints_where_everything_is(run_dir):
    stdout = (run_dir / "stdout.txt").read_text()
    summary = _summary(stdout)
    assert stdout.count("fastopt train: finished 2 epochs (64 iterations)") == 1
    work = run_dir / "work_dirs" / "cnn_sgd_cosine"  # MMEngine's default work dir
    top1 = float(summary["final val"].split("accuracy/top1:")[1].split(",")[0])
    assert top1 > 20.0  # 2 short epochs: well above the 12.5% of chance
    for key in ("log", "scalars", "checkpoint", "plot"):
        path = summary[key].strip().split(" ")[0]
        assert (run_dir / path).is_file(), key
        assert (run_dir / path).resolve().is_relative_to(work)
    assert summary["checkpoint"].strip().startswith("work_dirs/cnn_sgd_cosine/epoch_2.pth")
    assert (run_dir / summary["plot"].strip()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (work / "cnn_sgd_cosine.py").is_file()  # the config, dumped once training started
    ckpt = torch.load(work / "epoch_2.pth", weights_only=True)
    assert ckpt["meta"]["epoch"] == 2 and ckpt["meta"]["iter"] == 64


def test_test_command_evaluates_a_checkpoint(run_dir, tmp_path):
    work = _copy_run(run_dir, tmp_path)
    before = _snapshot(work)
    proc = _fastopt(tmp_path, "test", CONFIG, work / "epoch_2.pth", "--cfg-options", *QUICK)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(li for li in proc.stdout.splitlines() if li.strip().startswith("accuracy/top1"))
    assert 20.0 < float(line.split(":")[1].split(",")[0]) <= 100.0
    assert "on the test set" in proc.stdout
    # which data it was, so that a number unlike training's last validation is explained
    assert (
        "  data: SyntheticShapes split 'test', 200 samples (training's validation used split "
        "'val')" in proc.stdout
    )
    after = _snapshot(work)
    # only a new log dir was added; the run's files (config dump included) are untouched
    assert {k: v for k, v in after.items() if k in before} == before
    new = {k.split("/")[0] for k in after if k not in before}
    assert len(new) == 1 and not new & {"cnn_sgd_cosine.py", "last_checkpoint"}


def test_resume_continues_the_run_and_the_plot_joins_both(run_dir, tmp_path):
    work = _copy_run(run_dir, tmp_path)
    old_ckpt = (work / "epoch_2.pth").read_bytes()
    proc = _fastopt(
        tmp_path, "train", CONFIG, "--resume", "--cfg-options", "train_cfg.max_epochs=3", *QUICK
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "resumed epoch: 2, iter: 64" in proc.stdout
    assert "fastopt train: finished 3 epochs (96 iterations)" in proc.stdout
    assert (work / "epoch_3.pth").is_file() and (work / "epoch_2.pth").read_bytes() == old_ckpt
    curves = plot.read_curves(work)
    assert len(curves.runs) == 2
    steps = [s for s, _ in curves.train["loss"]]
    assert steps == sorted(steps) and steps[-1] == 96 and steps[0] == 4
    assert [s for s, _ in curves.val["accuracy/top1"]] == [32, 64, 96]

    out = tmp_path / "curves.png"
    proc = _fastopt(tmp_path, "plot", work, "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"wrote {out}: 96 iterations")
    import matplotlib.image

    image = matplotlib.image.imread(out)
    # the default example logs no grad_norm (no clip_grad): three panels, none left empty
    assert image.shape[:2] == (440, 1500)


def test_resume_of_a_finished_run_says_it_is_complete(run_dir, tmp_path, monkeypatch, capsys):
    """`--resume` on a run that trained to the config's length trains nothing, says so, and
    names the checkpoint of this work dir: a copy (or a moved work dir) has its own, though
    its last_checkpoint record names the original's."""
    work = _copy_run(run_dir, tmp_path)
    original = run_dir / "work_dirs" / "cnn_sgd_cosine" / "epoch_2.pth"
    assert str(original) in (work / "last_checkpoint").read_text()  # the record of the original
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    args = ["train", str(CONFIG), "--resume", "--cfg-options", "train_cfg.max_epochs=2", *QUICK]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "resumed epoch: 2, iter: 64" in out
    assert out.splitlines()[-1].startswith(
        "fastopt train: the run in work_dirs/cnn_sgd_cosine is complete: "
        "work_dirs/cnn_sgd_cosine/epoch_2.pth was saved after 2 epochs, and "
        "train_cfg.max_epochs is 2. Nothing to train."
    ), out
    assert "train_cfg.max_epochs=N" in out and "scalars.json" not in out
    assert "fastopt train: finished" not in out
    after = _snapshot(tmp_path)
    kept = [k for k in before if k.endswith((".pth", "last_checkpoint"))]
    assert kept and all(after[k] == before[k] for k in kept)  # no checkpoint written


def test_plot_defaults_to_the_newest_log_dir_and_draws_grad_norm(tmp_path):
    work = tmp_path / "work"
    for name, first in (("20240101_000000", 0), ("20240101_000100", 20)):
        vis = work / name / "vis_data"
        vis.mkdir(parents=True)
        rows = [
            {"lr": 0.1, "loss": 2.0 - 0.01 * i, "grad_norm": 1.0, "iter": i, "step": i}
            for i in range(first + 5, first + 45, 5)
        ]
        rows.append({"accuracy/top1": 50.0 + first, "step": first + 40})
        text = "\n".join(json.dumps(r) for r in rows) + "\n{broken"
        (vis / "scalars.json").write_text(text)
    assert main(["plot", str(work)]) == 0
    assert (work / "20240101_000100" / "curves.png").is_file()
    import matplotlib.image

    image = matplotlib.image.imread(work / "20240101_000100" / "curves.png")
    assert image.shape[:2] == (720, 1100)  # 2x2: loss, lr, grad_norm, validation
    curves = plot.read_curves(work)
    assert curves.skipped_lines == 2
    # the second run started at iteration 20: the first one's points after it are replaced
    assert [s for s, _ in curves.train["grad_norm"]] == [5, 10, 15, 20, *range(25, 65, 5)]
    assert [s for s, _ in curves.val["accuracy/top1"]] == [60]


@pytest.mark.parametrize(
    "target, message",
    [
        ("missing", "does not exist"),
        ("empty", "no training logs under"),
    ],
)
def test_plot_errors(tmp_path, capsys, target, message):
    (tmp_path / "empty").mkdir()
    assert main(["plot", str(tmp_path / target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fastopt plot: error:") and message in err[0]


def test_amp_flag_switches_to_bfloat16_autocast_on_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", str(CONFIG), "--amp", "--cfg-options", "train_cfg.max_epochs=2", *QUICK]
    assert main(args) == 0
    from fastopt.config import Config

    dumped = Config.fromfile(tmp_path / "work_dirs" / "cnn_sgd_cosine" / "cnn_sgd_cosine.py")
    assert dumped.optim_wrapper.type == "AmpOptimWrapper"
    assert dumped.optim_wrapper.dtype == "bfloat16" and dumped.optim_wrapper.loss_scale == "dynamic"


# ------------------------------------------------------------------------------ bad input
def _error(capsys, command: str) -> str:
    """The single error line of a failed command (stderr may also hold Python warnings)."""
    err = [li for li in capsys.readouterr().err.splitlines() if li.strip()]
    errors = [li for li in err if "error:" in li]
    assert len(errors) == 1, err
    assert err[-1] == errors[0] and errors[0].startswith(f"fastopt {command}: error: ")
    return errors[0]


BAD_INPUT = {
    "missing config": (["train", "nope.py"], ["config file nope.py does not exist"]),
    "unknown type": (
        ["train", CONFIG, "--resume", "--cfg-options", "optim_wrapper.optimizer.type=FusedSDG"],
        [
            "FusedSDG is not in the fastopt::optimizer registry",
            # the key came from --cfg-options, not from the file
            "(in --cfg-options optim_wrapper.optimizer.type)",
            "Did you mean FusedSGD",
        ],
    ),
    "unknown key": (
        ["train", CONFIG, "--resume", "--cfg-options", "optim_wrapper.optimizer.momentun=0.9"],
        ["unexpected keyword 'momentun'", "(in --cfg-options optim_wrapper.optimizer.momentun)"],
    ),
    "unknown dataset key": (
        ["train", CONFIG, "--resume", "--cfg-options", "train_dataloader.dataset.splt=val"],
        [
            "SyntheticShapes",
            "unexpected keyword 'splt'",
            "--cfg-options train_dataloader.dataset.splt",
        ],
    ),
    "wrong value type": (
        ["train", CONFIG, "--resume", "--cfg-options", "train_cfg.max_epochs=three"],
        ["max_epochs should be an integer, but got 'three'"],
    ),
    "missing checkpoint": (
        ["train", CONFIG, "--resume", "gone.pth"],
        ["checkpoint gone.pth does not exist"],
    ),
    "work dir under a file": (
        ["train", CONFIG, "--work-dir", "afile/run"],
        ["cannot create work dir", "afile is not a directory"],
    ),
    "work dir is a file": (
        ["train", CONFIG, "--work-dir", "afile"],
        ["work dir", "afile exists and is not a directory"],
    ),
    "test: missing checkpoint": (
        ["test", CONFIG, "gone.pth"],
        ["checkpoint gone.pth does not exist"],
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_one_clear_line_and_changes_nothing(
    run_dir, tmp_path, monkeypatch, capsys, case
):
    args, expected = BAD_INPUT[case]
    work = _copy_run(run_dir, tmp_path)
    (tmp_path / "afile").write_text("not a directory")
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    # the config errors come with --resume: the existing run is there to be continued, so
    # nothing else stops the command before it builds what the config describes
    assert main([str(a) for a in args]) == 1
    line = _error(capsys, args[0])
    for text in expected:
        assert text in line, line
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before, "a file changed"
    new = {Path(k).parts[:3] for k in after if k not in before}
    # at most a new log dir of the failed attempt (its log); never a checkpoint or config
    assert all(len(p) == 3 and p[:2] == work.relative_to(tmp_path).parts for p in new), new


def test_a_bad_key_prints_its_error_and_little_else(tmp_path, monkeypatch, capsys):
    """The config is built before the run header: a misspelt keyword ends the command with its
    error, named after --cfg-options, without the environment, config and hook-order dump
    (which goes to the log file of a run that starts)."""
    monkeypatch.chdir(tmp_path)
    args = ["train", str(CONFIG), "--cfg-options", "optim_wrapper.optimizer.lrr=0.1"]
    assert main(args) == 1
    captured = capsys.readouterr()
    out, err = captured.out.splitlines(), captured.err.splitlines()
    assert out == [] and len(err) == 1, captured
    assert err[0].startswith("fastopt train: error: FusedSGD (from the fastopt::optimizer")
    assert err[0].endswith("(in --cfg-options optim_wrapper.optimizer.lrr)")
    assert str(CONFIG) not in err[0]  # the file holds no such key
    assert not (tmp_path / "work_dirs").exists()


def test_the_terminal_header_is_short_and_the_log_has_the_dump(run_dir):
    stdout = (run_dir / "stdout.txt").read_text()
    before_training = stdout[: stdout.index("Epoch(train)")].splitlines()
    assert len(before_training) <= 9, before_training
    header = stdout[stdout.index("Training") :].splitlines()[1:7]
    assert [line.split(":")[0].strip() for line in header] == [
        "config",
        "work dir",
        "model",
        "optimizer",
        "schedule",
        "device",
    ]
    assert "SmallCNN, 22" in header[2] and "FusedSGD(lr=0.2" in header[3]
    assert "2 epochs x 32 iterations" in header[4] and "threads" in header[5]
    assert "Config:" not in stdout and "Hooks will be executed" not in stdout
    (log,) = (run_dir / "work_dirs" / "cnn_sgd_cosine").glob("*/*.log")
    text = log.read_text()
    assert "Config:" in text and "Hooks will be executed" in text and "Training\n" in text
    # one process: no process group, whatever env_cfg.dist_cfg says
    assert "dist_cfg: not used (one process, launcher none)" in text
    assert "'nccl'" not in text.split("Config:")[0]


def test_an_existing_run_is_not_overwritten_without_resume(run_dir, tmp_path, monkeypatch, capsys):
    work = _copy_run(run_dir, tmp_path)
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(CONFIG)]) == 1
    line = _error(capsys, "train")
    assert "work_dirs/cnn_sgd_cosine already holds a run's checkpoints" in line
    assert "epoch_2.pth" in line and "--resume" in line and "--work-dir" in line
    assert _snapshot(tmp_path) == before
    assert work.is_dir()


def _corrupt(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])  # a torn copy
    return path


@pytest.mark.parametrize("how", ["resume", "load_from", "test"])
def test_corrupt_checkpoint(run_dir, tmp_path, monkeypatch, capsys, how):
    work = _copy_run(run_dir, tmp_path)
    bad = tmp_path / "bad.pth"
    bad.write_bytes((work / "epoch_1.pth").read_bytes())
    _corrupt(bad)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(tmp_path)
    if how == "resume":
        args = ["train", str(CONFIG), "--resume", "bad.pth"]
    elif how == "load_from":
        args = ["train", str(CONFIG), "--work-dir", "new", "--cfg-options", "load_from=bad.pth"]
    else:
        args = ["test", str(CONFIG), "bad.pth"]
    assert main(args) == 1
    line = _error(capsys, args[0])
    assert "checkpoint bad.pth is corrupt" in line
    assert _snapshot(tmp_path) == before and not (tmp_path / "new").exists()


@pytest.mark.parametrize("how", ["resume", "load_from", "test"])
def test_checkpoint_of_another_model(run_dir, tmp_path, monkeypatch, capsys, how):
    work = _copy_run(run_dir, tmp_path)
    monkeypatch.chdir(tmp_path)
    other = ["model.num_classes=6"]
    if how == "resume":
        args = ["train", str(CONFIG), "--resume", "--cfg-options", *other]
    elif how == "load_from":
        load = f"load_from={work / 'epoch_2.pth'}"
        args = ["train", str(CONFIG), "--work-dir", "new", "--cfg-options", load, *other]
    else:
        args = ["test", str(CONFIG), str(work / "epoch_2.pth"), "--cfg-options", *other]
    before = _snapshot(tmp_path)
    assert main(args) == 1
    line = _error(capsys, args[0])
    assert "does not fit the config's SmallCNN: shape mismatch" in line
    assert "head.weight (8, 128) vs (6, 128)" in line
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not any(k.endswith((".pth", "cnn_sgd_cosine.py")) for k in after if k not in before)


def test_resume_with_an_incompatible_optimizer_config(run_dir, tmp_path, monkeypatch, capsys):
    work = _copy_run(run_dir, tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _snapshot(work)
    args = [
        "train",
        str(CONFIG),
        "--resume",
        "--cfg-options",
        "optim_wrapper.paramwise_cfg.norm_decay_mult=0.0",
    ]
    assert main(args) == 1
    line = _error(capsys, "train")
    assert "cannot resume from" in line and "epoch_2.pth" in line
    assert "different number of parameter groups" in line
    after = _snapshot(work)
    assert {k: v for k, v in after.items() if k in before} == before  # config dump included


def test_launcher_none_inside_torchrun_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(CONFIG)]) == 1
    assert "--launcher is none: pass --launcher pytorch" in _error(capsys, "train")
    assert list(tmp_path.iterdir()) == []


def test_errors_as_a_child_process(tmp_path):
    """The real exit status and stderr, and --debug for the traceback."""
    bad = tmp_path / "bad.py"
    bad.write_text("model = dict(type='SmallCNN'\n")
    proc = _fastopt(tmp_path, "train", bad)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastopt train: error: config file {bad}")
    assert "invalid syntax" in lines[0] or "never closed" in lines[0]

    proc = _fastopt(tmp_path, "train", CONFIG, "--cfg-options", "model.type=SmallCN", "--debug")
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "SmallCN is not in the fastopt::model registry" in proc.stderr
    assert not (tmp_path / "work_dirs" / "cnn_sgd_cosine" / "cnn_sgd_cosine.py").exists()


def test_resume_without_a_last_checkpoint_record_names_the_files(
    run_dir, tmp_path, monkeypatch, capsys
):
    work = _copy_run(run_dir, tmp_path)
    (work / "last_checkpoint").unlink()
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["train", str(CONFIG), "--resume"]) == 1
    line = _error(capsys, "train")
    assert "has no usable last_checkpoint record" in line and "epoch_2.pth" in line
    assert "--resume PATH" in line
    assert _snapshot(tmp_path) == before


def test_the_top_level_help_is_written_for_users():
    from fastopt.cli import COMMANDS, build_parser

    text = " ".join(build_parser().format_help().split())  # argparse wraps the lines
    assert "fastopt list-configs" in text and "fastopt train cnn_sgd_cosine" in text
    assert "fastopt.commands" not in text and "subcommand per module" not in text
    assert all(name in text for name in COMMANDS)
