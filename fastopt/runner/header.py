"""The short run header a runner prints on the terminal before training starts.

A few lines that say what runs where: config, work dir and log file, model size, optimizer,
schedule, device and threads. The full environment, config and hook order go to the log file
only (see :mod:`fastopt.logging.run_logger`); the header is printed once everything that a config
can get wrong has been built, so a failing run shows its error instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from fastopt.model import unwrap_model
from fastopt.scheduler.base import INF
from fastopt.wrapper import OptimWrapperDict

if TYPE_CHECKING:
    from fastopt.runner import Runner

# optimizer hyperparameters worth a place on the one optimizer line, in this order
_HYPER_KEYS = ("lr", "momentum", "betas", "weight_decay", "eps", "nesterov")


def shown_path(path: str) -> str:
    """``path`` relative to the current directory when it is inside it."""
    path = os.path.abspath(path)
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def count(n: int) -> str:
    """``22.3k``, ``124M``: a parameter count in three significant digits."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def plural(n: int, word: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _model_line(model: torch.nn.Module) -> str:
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    trainable = sum(p.numel() for p in params if p.requires_grad)
    frozen = "" if trainable == total else f", {count(trainable)} trainable"
    return f"{type(model).__name__}, {count(total)} parameters{frozen}"


def _optimizer_line(wrapper: Any) -> str:
    if isinstance(wrapper, OptimWrapperDict):
        return "; ".join(f"{name}: {_optimizer_line(w)}" for name, w in wrapper.items())
    optimizer = wrapper.optimizer
    defaults = getattr(optimizer, "defaults", {})
    hyper = []
    for key in _HYPER_KEYS:
        value = defaults.get(key)
        if value is None or value is False or (key != "lr" and value == 0):
            continue
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, tuple):
            value = "(" + ", ".join(f"{v:g}" for v in value) + ")"
        hyper.append(f"{key}={value}")
    groups = len(optimizer.param_groups)
    parts = [f"{type(optimizer).__name__}({', '.join(hyper)})"]
    if groups > 1:
        parts.append(f"{groups} param groups")
    parts.append(type(wrapper).__name__)
    clip = getattr(wrapper, "grad_clip", None)
    if clip is not None:
        what = (
            f"max_norm={clip.max_norm:g}" if clip.type == "norm" else f"value={clip.clip_value:g}"
        )
        parts.append(f"clip_grad {what}")
    dtype = getattr(wrapper, "autocast_dtype", None)  # AmpOptimWrapper
    if dtype is not None:
        parts.append(f"AMP {str(dtype).replace('torch.', '')}")
    counts = getattr(wrapper, "_accumulative_counts", 1)
    if counts > 1:
        parts.append(f"accumulative_counts={counts}")
    return ", ".join(parts)


def _schedulers(schedulers: Any) -> Iterable[Any]:
    if isinstance(schedulers, dict):
        for group in schedulers.values():
            yield from group
    elif schedulers is not None:
        yield from schedulers


def _schedule_line(runner: Runner) -> str:
    loop = runner.train_loop
    iters = loop.max_iters
    if type(loop).__name__ == "IterBasedTrainLoop":
        length = plural(iters, "iteration")
    else:
        length = f"{plural(loop.max_epochs, 'epoch')} x {len(runner.train_dataloader)} iterations"
    spans = []
    for s in _schedulers(runner.param_schedulers):
        unit = "epochs" if s.by_epoch else "iters"
        total = loop.max_epochs if s.by_epoch else iters
        end = total if s.end >= INF else min(s.end, total)
        spans.append(f"{type(s).__name__} {unit} {s.begin}-{end}")
    return length + (f"; {', '.join(spans)}" if spans else "; no param_scheduler")


def _device_line(runner: Runner) -> str:
    param = next(iter(runner.model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    if device.type == "cuda":
        where = f"{device} ({torch.cuda.get_device_name(device)})"
    else:
        where = f"cpu, {plural(torch.get_num_threads(), 'thread')}"
    if runner.world_size > 1:
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "?"
        where += f" per process, {runner.world_size} processes ({backend})"
    return f"{where}, seed {runner.seed}"


def run_header(runner: Runner) -> str:
    """The header lines of ``runner``'s training run (its loops and optimizer built)."""
    cfg = runner.cfg
    log_file = os.path.join(runner.log_dir, f"{runner.timestamp}.log")
    lines = []
    if cfg.filename:
        lines.append(f"config:     {shown_path(cfg.filename)}")
    lines += [
        f"work dir:   {shown_path(runner.work_dir)} (log: {shown_path(log_file)})",
        f"model:      {_model_line(unwrap_model(runner.model))}",
        f"optimizer:  {_optimizer_line(runner.optim_wrapper)}",
        f"schedule:   {_schedule_line(runner)}",
        f"device:     {_device_line(runner)}",
    ]
    return "Training\n  " + "\n  ".join(lines)
