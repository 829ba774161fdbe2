"""``fastopt plot-schedule``: draw a config's lr and momentum over the whole run, as a PNG.

Nothing is trained. A one-parameter optimizer is built from the config's
``optim_wrapper.optimizer`` (or a plain SGD when that cannot be built), the config's
``param_scheduler`` entries are built the way the runner builds them, and they are stepped
the way the runner steps them: iteration-based ones after every iteration, epoch-based ones
after every epoch. The value plotted at iteration ``i`` is the one iteration ``i`` trains
with. The epoch length (it matters for ``convert_to_iter_based`` entries and legacy
``lr_config``) is that of the config's ``train_dataloader``, built without training;
``--epoch-length`` overrides it. A run shortened with ``--epochs``/``--iters`` drops the
schedulers it ends before, as ``fastopt train`` does (:mod:`fastopt.runner.run_length`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HELP = "draw the lr and momentum of a config's param_scheduler over training, as a PNG"

DEFAULT_EPOCH_LENGTH = 100


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .common import CONFIG_HELP

    parser.add_argument("config", help=CONFIG_HELP)
    parser.add_argument(
        "--out",
        "-o",
        help="PNG file to write (default: <config name>_schedule.png in the current folder)",
    )
    parser.add_argument(
        "--epoch-length",
        type=int,
        metavar="N",
        help="iterations per epoch (default: len(train_dataloader) of the config; "
        f"{DEFAULT_EPOCH_LENGTH} when it cannot be built)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--epochs", type=int, metavar="E", help="train for E epochs (overrides train_cfg)"
    )
    length.add_argument(
        "--iters", type=int, metavar="I", help="train for I iterations (overrides train_cfg)"
    )
    parser.add_argument(
        "--lr", type=float, help="base learning rate (overrides the config's optimizer lr)"
    )


@dataclass
class ScheduleTrace:
    """What the runner would set, iteration by iteration."""

    lr: list[float] = field(default_factory=list)
    momentum: list[float] = field(default_factory=list)
    by_epoch: bool = True
    max_epochs: int = 1
    max_iters: int = 0
    epoch_length: int = DEFAULT_EPOCH_LENGTH
    optimizer: str = ""
    notes: list[str] = field(default_factory=list)


def training_length(
    cfg: Any, epochs: int | None, iters: int | None, epoch_length: int
) -> tuple[bool, int, int]:
    """(epoch-based?, max_epochs, max_iters) from the flags or the config's ``train_cfg``."""
    if epochs is not None:
        return True, epochs, epochs * epoch_length
    if iters is not None:
        return False, 1, iters
    train_cfg = cfg.get("train_cfg") or {}
    loop = train_cfg.get("type")
    iter_based = (
        loop == "IterBasedTrainLoop"
        or train_cfg.get("by_epoch") is False
        or ("max_iters" in train_cfg and "max_epochs" not in train_cfg)
    )
    if iter_based and train_cfg.get("max_iters") is not None:
        # MMEngine's IterBasedTrainLoop reports max_epochs=1
        return False, 1, int(train_cfg["max_iters"])
    if not iter_based and train_cfg.get("max_epochs") is not None:
        max_epochs = int(train_cfg["max_epochs"])
        return True, max_epochs, max_epochs * epoch_length
    raise ValueError(
        "the config sets no training length (train_cfg.max_epochs or train_cfg.max_iters); "
        "pass --epochs or --iters"
    )


def build_optimizer(cfg: Any, lr: float | None, notes: list[str]) -> Any:
    """A one-parameter optimizer of the config's type, else SGD with the config's lr."""
    import torch

    from fastopt.registry import OPTIMIZERS

    wrapper_cfg = cfg.get("optim_wrapper") or {}
    opt_cfg = dict(wrapper_cfg.get("optimizer") or cfg.get("optimizer") or {})
    if lr is not None:
        opt_cfg["lr"] = lr
    param = torch.nn.Parameter(torch.zeros(1))
    if "type" in opt_cfg:
        try:
            return OPTIMIZERS.build(dict(opt_cfg, params=[param]))
        except Exception as e:  # any failure: the plot only needs lr/momentum slots
            notes.append(f"could not build {opt_cfg['type']} ({e}); plotting with SGD")
    else:
        notes.append("no optim_wrapper.optimizer in the config; plotting with SGD")
    return torch.optim.SGD(
        [param], lr=float(opt_cfg.get("lr", 0.01)), momentum=float(opt_cfg.get("momentum", 0.0))
    )


def _scheduler_cfgs(cfg: Any, notes: list[str]) -> list[Any]:
    scheds = cfg.get("param_scheduler")
    if scheds is None:
        notes.append("no param_scheduler: the values stay constant")
        return []
    if isinstance(scheds, dict) and "type" not in scheds:  # one list per optimizer
        name = next(iter(scheds))
        notes.append(f"param_scheduler has one entry per optimizer; plotting {name!r}")
        scheds = scheds[name]
    return [scheds] if isinstance(scheds, dict) else list(scheds)


def _momentum(group: dict[str, Any]) -> float | None:
    if "momentum" in group:
        return float(group["momentum"])
    if "betas" in group:
        return float(group["betas"][0])
    return None


def simulate(
    cfg: Any,
    epoch_length: int = DEFAULT_EPOCH_LENGTH,
    epochs: int | None = None,
    iters: int | None = None,
    lr: float | None = None,
) -> ScheduleTrace:
    """Step the config's schedulers as the runner would and record every iteration's values."""
    import warnings

    from fastopt.scheduler import build_param_schedulers

    if epoch_length <= 0:
        raise ValueError(f"--epoch-length must be positive, got {epoch_length}")
    from fastopt.runner.run_length import RunLength, fit_schedules

    trace = ScheduleTrace(epoch_length=epoch_length)
    trace.by_epoch, trace.max_epochs, trace.max_iters = training_length(
        cfg, epochs, iters, epoch_length
    )
    optimizer = build_optimizer(cfg, lr, trace.notes)
    trace.optimizer = type(optimizer).__name__
    run = RunLength(
        iter_based=not trace.by_epoch,
        max_epochs=trace.max_epochs,
        max_iters=trace.max_iters,
        epoch_length=epoch_length,
        epochs_key="--epochs" if epochs is not None else "train_cfg.max_epochs",
        iters_key="--iters" if iters is not None else "train_cfg.max_iters",
    )
    scheduler_cfgs, unfit = fit_schedules(_scheduler_cfgs(cfg, trace.notes), run)
    trace.notes += unfit
    schedulers = build_param_schedulers(
        scheduler_cfgs,
        optimizer,
        epoch_length=epoch_length,
        max_epochs=trace.max_epochs,
        max_iters=trace.max_iters,
    )
    if any(getattr(s, "need_val_args", False) for s in schedulers):
        trace.notes.append("ReduceOnPlateau reacts to validation metrics: drawn without them")
    per_iter = [s for s in schedulers if not s.by_epoch]
    per_epoch = [s for s in schedulers if s.by_epoch]
    group = optimizer.param_groups[0]
    epochs_to_run = trace.max_epochs if trace.by_epoch else 1
    iters_per_epoch = epoch_length if trace.by_epoch else trace.max_iters
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(epochs_to_run):
            for _ in range(iters_per_epoch):
                trace.lr.append(float(group["lr"]))
                momentum = _momentum(group)
                if momentum is not None:
                    trace.momentum.append(momentum)
                for s in per_iter:
                    s.step()
            for s in per_epoch:
                s.step()
    return trace


def draw(trace: ScheduleTrace, out: Path, title: str) -> None:
    """Write the PNG: lr on top, momentum below (when the optimizer has one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if trace.momentum else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 3.2 * rows + 0.6), sharex=True, squeeze=False)
    x = range(len(trace.lr))
    series = [("learning rate", trace.lr, "tab:blue")]
    if trace.momentum:
        series.append(("momentum / beta1", trace.momentum, "tab:orange"))
    for ax, (label, values, color) in zip(axes[:, 0], series):
        ax.plot(x, values, color=color, linewidth=1.6)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
        if trace.by_epoch and 1 < trace.max_epochs <= 60:
            for e in range(1, trace.max_epochs):
                ax.axvline(e * trace.epoch_length, color="0.85", linewidth=0.6, zorder=0)
    bottom = axes[-1, 0]
    bottom.set_xlabel("iteration")
    if trace.by_epoch:
        length = trace.epoch_length
        top = axes[0, 0].secondary_xaxis(
            "top", functions=(lambda i: i / length, lambda e: e * length)
        )
        top.set_xlabel("epoch")
    if trace.by_epoch:
        run = f"{trace.max_epochs} epochs x {trace.epoch_length} iterations/epoch"
    else:
        run = f"{trace.max_iters} iterations"
    fig.suptitle(f"{title}\n{trace.optimizer}, {run}", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def loader_length(cfg: Any, notes: list[str]) -> int:
    """``len(train_dataloader)`` of the config (its dataset is built, nothing trains), or
    :data:`DEFAULT_EPOCH_LENGTH` with a note when it cannot be built."""
    from fastopt.dataset import build_dataloader

    loader_cfg = cfg.get("train_dataloader")
    if loader_cfg is None:
        notes.append(f"no train_dataloader: {DEFAULT_EPOCH_LENGTH} iterations per epoch assumed")
        return DEFAULT_EPOCH_LENGTH
    try:
        return len(build_dataloader(loader_cfg))
    except Exception as e:  # data that is not there (a real data set): say so and go on
        notes.append(
            f"train_dataloader cannot be built here ({type(e).__name__}: {e}); "
            f"{DEFAULT_EPOCH_LENGTH} iterations per epoch assumed (--epoch-length N sets it)"
        )
        return DEFAULT_EPOCH_LENGTH


def run(args: argparse.Namespace) -> int:
    from fastopt.config.shipped import resolve_config

    from .common import load_config, report_error

    notes: list[str] = []
    try:
        config = resolve_config(args.config)
        # as train loads it: MMCV 1.x keys translated, one tidy note per key
        cfg = load_config(config, None)
        epoch_length = args.epoch_length
        if epoch_length is None:
            epoch_length = loader_length(cfg, notes)
        trace = simulate(cfg, epoch_length, args.epochs, args.iters, args.lr)
    except Exception as e:
        return report_error("plot-schedule", e)
    path = Path(config)
    out = Path(args.out) if args.out else Path(f"{path.stem}_schedule.png")
    draw(trace, out, path.name)
    for note in notes + trace.notes:
        print(f"note: {note}")
    lrs = trace.lr
    print(
        f"wrote {out}: {len(lrs)} iterations, lr first {lrs[0]:.4g}, peak {max(lrs):.4g}, "
        f"last {lrs[-1]:.4g}"
    )
    return 0
