"""``fastopt plot``: draw a run's training curves from its ``vis_data/scalars.json``, as a PNG.

Panels over the training iterations: the losses, the learning rate(s), the gradient norm
(when the run logged one: the optimizer wrapper logs it with ``clip_grad``) and the
validation metrics. ``WORK_DIR`` is a work
dir (``<work_dir>/<timestamp>/vis_data/scalars.json`` for each run in it), one run's log dir,
or a ``scalars.json`` file. The runs of a work dir are joined in time order, and where a
later run starts at an iteration an earlier one had already reached (a resume, or a fresh
start), the later run's values replace the earlier ones from there on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "draw the loss, lr, grad_norm and metric curves of a training run, as a PNG"

# keys of the train records that are bookkeeping, not curves
_TRAIN_META = {"step", "epoch", "iter", "time", "data_time", "memory", "eta"}
_VAL_META = {"step", "time", "data_time", "epoch", "iter"}


@dataclass
class Curves:
    """The scalars of a work dir, with validation points placed on the iteration axis."""

    train: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    val: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    runs: list[str] = field(default_factory=list)
    skipped_lines: int = 0

    @property
    def last_iter(self) -> int:
        series = list(self.train.values()) + list(self.val.values())
        steps = [s for points in series for s, _ in points]
        return max(steps) if steps else 0


def find_scalar_files(path: str | os.PathLike) -> list[Path]:
    """The ``scalars.json`` files of the runs under ``path``, oldest run first."""
    root = Path(path)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    if root.is_file():
        return [root]
    own = root / "vis_data" / "scalars.json"
    if own.is_file():  # a run's log dir
        return [own]
    files = [p for p in root.glob("*/vis_data/scalars.json") if p.is_file()]
    # log dirs are named by their start time (YYYYmmdd_HHMMSS, then _1, _2 in one second)
    return sorted(files, key=lambda p: (p.parent.parent.name.split("_")[:2], p.stat().st_mtime))


def _read_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    records, bad = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # e.g. the last line of a killed run
                bad += 1
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), (int, float)):
                records.append(record)
            else:
                bad += 1
    return records, bad


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _is_train(record: dict[str, Any]) -> bool:
    return ("lr" in record or any("loss" in k for k in record)) and (
        "iter" in record or "epoch" in record
    )


def _run_curves(records: list[dict[str, Any]], length: int | None) -> tuple[dict, dict]:
    """Train and val series of one run; val steps converted to iterations.

    ``length``: iterations per epoch (when known from the runs of the work dir).
    """
    train: dict[str, list[tuple[int, float]]] = {}
    val: dict[str, list[tuple[int, float]]] = {}
    epoch_end: dict[int, int] = {}
    train_records = [r for r in records if _is_train(r)]
    for r in train_records:
        step = int(r["step"])
        if "epoch" in r:
            epoch_end[int(r["epoch"])] = max(epoch_end.get(int(r["epoch"]), 0), step)
        for key, value in r.items():
            number = _number(value)
            if key not in _TRAIN_META and number is not None:
                train.setdefault(key, []).append((step, number))
    by_epoch = bool(epoch_end)
    if length and by_epoch:
        # the logger skips the last, partial window of an epoch: place each validation at
        # the epoch's true end
        epoch_end = {e: e * length for e in epoch_end}
    for r in records:
        if any(r is t for t in train_records):
            continue
        step = int(r["step"])
        if by_epoch:
            if step not in epoch_end:
                continue  # validation without training in this run (e.g. `fastopt test`)
            step = epoch_end[step]
        elif not train_records:
            continue
        for key, value in r.items():
            number = _number(value)
            if key not in _VAL_META and number is not None:
                val.setdefault(key, []).append((step, number))
    return train, val


def _epoch_length(train_records: list[dict[str, Any]]) -> int | None:
    """Iterations per epoch: the usual gap between the first logged steps of epochs."""
    first: dict[int, int] = {}
    for r in train_records:
        if "epoch" in r:
            first.setdefault(int(r["epoch"]), int(r["step"]))
    gaps = [first[e + 1] - first[e] for e in first if e + 1 in first]
    if not gaps:
        return None
    return max(set(gaps), key=gaps.count)


def _merge(into: dict[str, list], new: dict[str, list], start: int) -> None:
    """Keep ``into``'s points before ``start``, then append ``new``'s."""
    for key in list(dict.fromkeys([*into, *new])):
        kept = [(s, v) for s, v in into.get(key, []) if s < start]
        into[key] = kept + new.get(key, [])
        if not into[key]:
            del into[key]


def read_curves(path: str | os.PathLike) -> Curves:
    """Every run's scalars under ``path`` (see the module docstring), joined."""
    files = find_scalar_files(path)
    if not files:
        raise FileNotFoundError(
            f"no training logs under {path} (looked for */vis_data/scalars.json and "
            "vis_data/scalars.json)"
        )
    curves = Curves()
    runs = []
    for file in files:
        records, bad = _read_records(file)
        curves.skipped_lines += bad
        runs.append((file, records))
    lengths = [_epoch_length([r for r in records if _is_train(r)]) for _, records in runs]
    known = [n for n in lengths if n]
    length = known[-1] if known else None
    for file, records in runs:
        train, val = _run_curves(records, length)
        if not train:
            continue
        start = min(s for series in train.values() for s, _ in series)
        # a run logs its first point at the end of its first logging interval: anything an
        # earlier run logged after the iteration this run started from is superseded
        first_step = start - _first_interval(train)
        _merge(curves.train, train, first_step + 1)
        _merge(curves.val, val, first_step + 1)
        curves.runs.append(file.parent.parent.name)
    if not curves.train:
        raise FileNotFoundError(f"the logs under {path} hold no training iterations")
    return curves


def _first_interval(train: dict[str, list[tuple[int, float]]]) -> int:
    """Iterations between a run's first two logged points (its logging interval)."""
    steps = sorted({s for series in train.values() for s, _ in series})
    return steps[1] - steps[0] if len(steps) > 1 else 1


def _series_keys(train: dict[str, list]) -> tuple[list[str], list[str], list[str]]:
    losses = [k for k in train if "loss" in k]
    lrs = [k for k in train if k == "lr" or k.endswith("lr") or k.endswith(".lr")]
    norms = [k for k in train if "grad_norm" in k]
    return losses, lrs, norms


def draw(curves: Curves, out: str | os.PathLike, title: str) -> None:
    """Write the PNG: losses, lr, grad norm (2x2; without a logged grad norm 1x3), metrics."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    losses, lrs, norms = _series_keys(curves.train)
    panels = [
        ("loss", losses, curves.train, "no loss logged"),
        ("learning rate", lrs, curves.train, "no lr logged"),
        ("gradient norm (before clipping)", norms, curves.train, ""),
        ("validation", list(curves.val), curves.val, "no validation ran"),
    ]
    if not norms:  # logged only with clip_grad: no empty panel for a run without it
        del panels[2]
    rows, cols = (2, 2) if len(panels) == 4 else (1, 3)
    size = (11, 7.2) if rows == 2 else (15, 4.4)
    fig, grid = plt.subplots(rows, cols, figsize=size, sharex=True, squeeze=False)
    axes = list(grid.flat)
    for ax, (label, keys, source, empty) in zip(axes, panels):
        ax.set_title(label, fontsize=10)
        ax.grid(True, alpha=0.3)
        if not keys:
            ax.text(0.5, 0.5, empty, ha="center", va="center", transform=ax.transAxes, color="0.4")
            continue
        for key in keys:
            xs = [s for s, _ in source[key]]
            ys = [v for _, v in source[key]]
            marker = "o" if source is curves.val else None
            ax.plot(xs, ys, label=key, marker=marker, markersize=3, linewidth=1.4)
        positive = [v for key in keys for _, v in source[key] if math.isfinite(v)]
        if label != "validation" and positive and min(positive) > 0:
            if max(positive) / min(positive) > 50:
                ax.set_yscale("log")
        if label == "learning rate" and ax.get_yscale() == "linear":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        if len(keys) > 1 or label == "validation":
            ax.legend(fontsize=8)
    for ax in grid[-1]:
        ax.set_xlabel("iteration")
    summary = [f"{curves.last_iter} iterations"]
    for key, series in curves.val.items():
        if "acc" in key or "top" in key:
            summary.append(f"final {key} {series[-1][1]:.2f}")
    if len(curves.runs) > 1:
        summary.append(f"{len(curves.runs)} runs joined")
    fig.suptitle(f"{title}\n" + ", ".join(summary), fontsize=11)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def default_output(path: str | os.PathLike) -> Path:
    """``curves.png`` in the newest run's log dir under ``path``."""
    files = find_scalar_files(path)
    if not files:
        raise FileNotFoundError(f"no training logs under {path}")
    return files[-1].parent.parent / "curves.png"


def plot_work_dir(path: str | os.PathLike, out: str | os.PathLike | None = None) -> Curves:
    """Read the runs under ``path`` and draw them into ``out`` (default: :func:`default_output`)."""
    curves = read_curves(path)
    target = Path(out) if out is not None else default_output(path)
    root = Path(path)
    name = root.name if root.is_dir() else root.parent.parent.name
    if root.is_dir() and (root / "vis_data").is_dir():
        name = root.parent.name  # a log dir: name the work dir
    draw(curves, target, name)
    return curves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "work_dir",
        metavar="WORK_DIR",
        help="a work dir, one run's log dir (<work_dir>/<timestamp>), or a scalars.json file",
    )
    parser.add_argument(
        "--out",
        "-o",
        metavar="PNG",
        help="PNG file to write (default: curves.png in the newest run's log dir)",
    )


def run(args: argparse.Namespace) -> int:
    try:
        out = Path(args.out) if args.out else default_output(args.work_dir)
        if out.suffix.lower() != ".png":
            raise ValueError(f"--out must name a .png file, got {out}")
        curves = plot_work_dir(args.work_dir, out)
    except (OSError, ValueError) as e:
        print(f"fastopt plot: error: {e}", file=sys.stderr)
        return 1
    parts = [f"{curves.last_iter} iterations"]
    for key, series in list(curves.train.items()) + list(curves.val.items()):
        if "loss" in key or key in curves.val:
            parts.append(f"last {key} {series[-1][1]:.4g}")
    if curves.skipped_lines:
        parts.append(f"{curves.skipped_lines} unreadable lines skipped")
    print(f"wrote {out}: " + ", ".join(parts))
    return 0
