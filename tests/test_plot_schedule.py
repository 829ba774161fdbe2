"""``fastopt plot-schedule``: the simulated values and the PNG it writes."""

from __future__ import annotations

import argparse
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fastopt.commands import plot_schedule

GOLDEN_WARMUP_COSINE = [0.01, 0.0325, 0.055, 0.0775, 0.1, 0.1, 0.098907380037, 0.095677272882,
    0.090450849719, 0.083456530318, 0.075, 0.065450849719, 0.055226423163, 0.044773576837,
    0.034549150281, 0.025, 0.016543469682, 0.009549150281, 0.004322727118, 0.001092619963]  # fmt: skip


def write(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def invoke(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    plot_schedule.add_arguments(parser)
    return plot_schedule.run(parser.parse_args([str(a) for a in argv]))


def load(path: Path):
    from fastopt.config import Config

    return Config.fromfile(path)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_writes_a_png_of_lr_and_momentum(tmp_path, capsys):
    cfg = write(
        tmp_path,
        "warmup_cosine.py",
        """
        optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9))
        train_cfg = dict(by_epoch=True, max_epochs=12)
        param_scheduler = [
            dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=20),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=1, end=12, eta_min=1e-5,
                 convert_to_iter_based=True),
            dict(type='CosineAnnealingMomentum', by_epoch=True, eta_min=0.85),
        ]
        """,
    )
    out = tmp_path / "plot.png"
    assert invoke(cfg, "--out", out, "--epoch-length", "20") == 0
    width, height = png_size(out)
    assert (width, height) == (990, 770)  # 9 x 7 inches at 110 dpi: lr and momentum panels
    assert out.stat().st_size > 20_000
    printed = capsys.readouterr().out
    assert f"wrote {out}: 240 iterations" in printed and "peak 0.02" in printed


def test_default_output_name_and_lr_only_panel(tmp_path, monkeypatch):
    cfg = write(
        tmp_path,
        "adagrad.py",
        """
        optim_wrapper = dict(optimizer=dict(type='Adagrad', lr=0.1))
        param_scheduler = dict(type='StepLR', step_size=2, by_epoch=True)
        """,
    )
    monkeypatch.chdir(tmp_path)
    assert invoke(cfg, "--epochs", "6", "--epoch-length", "3") == 0
    width, height = png_size(tmp_path / "adagrad_schedule.png")
    assert (width, height) == (990, 418)  # one panel: Adagrad has no momentum


def test_simulation_steps_like_the_runner(tmp_path):
    cfg = load(
        write(
            tmp_path,
            "golden.py",
            """
            optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
            train_cfg = dict(type='IterBasedTrainLoop', max_iters=20)
            param_scheduler = [
                dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
                dict(type='CosineAnnealingLR', by_epoch=False, begin=5),
            ]
            """,
        )
    )
    trace = plot_schedule.simulate(cfg, epoch_length=7)
    assert not trace.by_epoch and trace.max_iters == 20
    assert trace.lr == pytest.approx(GOLDEN_WARMUP_COSINE, abs=1e-12)
    assert trace.momentum == [0.0] * 20  # SGD's momentum slot, unscheduled


def test_epoch_schedulers_change_at_epoch_boundaries(tmp_path):
    cfg = load(
        write(
            tmp_path,
            "runner_golden.py",
            """
            optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1))
            train_cfg = dict(by_epoch=True, max_epochs=6)
            param_scheduler = [
                dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0, end=1,
                     convert_to_iter_based=True),
                dict(type='MultiStepLR', by_epoch=True, milestones=[3, 5]),
            ]
            """,
        )
    )
    trace = plot_schedule.simulate(cfg, epoch_length=4)
    expected = [0.01, 0.04, 0.07, 0.1] + [0.1] * 8 + [0.01] * 8 + [0.001] * 4
    assert trace.lr == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore::fastopt.config.LegacyConfigWarning")
def test_legacy_config_and_adam_betas(tmp_path):
    cfg = load(
        write(
            tmp_path,
            "legacy.py",
            """
            optimizer = dict(type='Adam', lr=0.01, betas=(0.95, 0.999))
            lr_config = dict(policy='poly', power=0.9, min_lr=1e-4, by_epoch=False,
                             warmup='linear', warmup_iters=5, warmup_ratio=0.1)
            momentum_config = dict(policy='cyclic', target_ratio=(0.85 / 0.95, 1))
            runner = dict(type='EpochBasedRunner', max_epochs=4)
            """,
        )
    )
    trace = plot_schedule.simulate(cfg, epoch_length=5)
    assert trace.optimizer == "Adam"
    assert trace.lr[:3] == pytest.approx([0.001, 0.0026749423, 0.0041880114], abs=1e-10)
    assert min(trace.momentum) == pytest.approx(0.85) and trace.momentum.index(0.85) == 8


def test_overrides_and_fallback_optimizer(tmp_path):
    cfg = load(
        write(
            tmp_path,
            "unknown_opt.py",
            """
            optim_wrapper = dict(optimizer=dict(type='NoSuchOptimizer', lr=0.5, momentum=0.8))
            train_cfg = dict(by_epoch=True, max_epochs=100)
            param_scheduler = [dict(type='ReduceOnPlateauLR', monitor='acc', rule='greater')]
            """,
        )
    )
    trace = plot_schedule.simulate(cfg, epoch_length=2, iters=9, lr=0.3)
    assert trace.optimizer == "SGD" and trace.lr == [0.3] * 9 and trace.momentum == [0.8] * 9
    assert any("NoSuchOptimizer" in n for n in trace.notes)
    assert any("ReduceOnPlateau" in n for n in trace.notes)


def test_errors_are_reported_not_raised(tmp_path, capsys):
    cfg = write(tmp_path, "no_length.py", "param_scheduler = [dict(type='StepLR', step_size=1)]\n")
    assert invoke(cfg) == 1
    assert "pass --epochs or --iters" in capsys.readouterr().err
    assert invoke(tmp_path / "missing.py") == 1
    assert "missing.py" in capsys.readouterr().err
    assert invoke(cfg, "--iters", "5", "--epoch-length", "0") == 1
    assert "--epoch-length must be positive" in capsys.readouterr().err


def test_module_is_cheap_to_import_and_registered():
    code = (
        "import sys, fastopt.commands.plot_schedule as m; "
        "print('matplotlib' in sys.modules, 'torch' in sys.modules, bool(m.HELP))"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert result.stdout.split() == ["False", "False", "True"]
    from fastopt.cli import COMMANDS

    assert COMMANDS["plot-schedule"] == "fastopt.commands.plot_schedule"


CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_a_shortened_run_leaves_out_what_it_ends_before(capsys, tmp_path):
    """`--epochs 1` on the default example: its cosine begins after the one epoch of warm-up,
    so the plot (as `fastopt train --cfg-options train_cfg.max_epochs=1`) has the warm-up only."""
    out = tmp_path / "short.png"
    assert invoke("cnn_sgd_cosine", "--epochs", "1", "--out", out) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == (
        "note: param_scheduler.1 (CosineAnnealingLR) begins at epoch 1, and training ends at "
        "epoch 1 (--epochs=1): left out; raise --epochs above 1 to train with it"
    )
    # the config's own loader: 4000 images in batches of 64 are 63 iterations per epoch
    assert lines[1].startswith(f"wrote {out}: 63 iterations, lr first 0.002, peak 0.2, last 0.2")


def test_an_mmcv1x_config_gets_tidy_notes_and_its_loader_length(capsys, tmp_path):
    out = tmp_path / "legacy.png"
    assert invoke(CONFIGS / "cnn_sgd_mmcv1x.py", "--out", out) == 0
    captured = capsys.readouterr()
    notes = captured.err.splitlines()
    # one line per translated key, as `fastopt train` prints them; no Python warning format
    assert notes and all(n.startswith("fastopt: note: config file ") for n in notes), notes
    assert any("`lr_config` was translated to `param_scheduler`" in n for n in notes)
    assert f"wrote {out}: 756 iterations" in captured.out  # 12 epochs x 63
