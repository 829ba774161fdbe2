"""A run's environment: cuDNN and multiprocessing settings, the process group, the timestamp
every rank shares, the experiment name and log dir, and the environment report of the log."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

import torch

import fastopt
from fastopt import dist
from fastopt.logging import MessageHub
from fastopt.visualization import Visualizer


def check_launcher(launcher: str) -> None:
    if launcher not in dist.LAUNCHERS:
        raise ValueError(
            f"launcher should be one of {dist.LAUNCHERS}, but got {launcher!r} (slurm and mpi "
            "are not supported yet: start the processes with torchrun)"
        )


def setup_env(env_cfg: dict, launcher: str) -> tuple[int, int, str]:
    """Apply ``env_cfg`` (cuDNN benchmark, multiprocessing start method, OpenCV threads),
    start the process group unless ``launcher`` is ``'none'``; return ``(rank, world_size,
    timestamp)``, the timestamp being rank 0's on every rank."""
    if env_cfg.get("cudnn_benchmark"):
        torch.backends.cudnn.benchmark = True
    mp_cfg = dict(env_cfg.get("mp_cfg", {}))
    method = mp_cfg.pop("mp_start_method", None)
    if method is not None and platform.system() != "Windows":
        import torch.multiprocessing as mp

        if mp.get_start_method(allow_none=True) != method:
            mp.set_start_method(method, force=True)
    threads = mp_cfg.pop("opencv_num_threads", None)
    if threads is not None:
        try:
            import cv2

            cv2.setNumThreads(threads)
        except ImportError:
            pass
    if launcher != "none" and not dist.is_distributed():
        dist.init_dist(launcher, **dict(env_cfg.get("dist_cfg", {})))
    rank, world_size = dist.get_dist_info()
    stamp = torch.tensor(time.time(), dtype=torch.float64)
    dist.broadcast(stamp)
    return rank, world_size, time.strftime("%Y%m%d_%H%M%S", time.localtime(stamp.item()))


def unique_experiment_name(
    experiment_name: str | None, cfg_filename: str | None, timestamp: str
) -> str:
    """``<name or config file stem>_<timestamp>``, with ``_<n>`` added when a runner of this
    process already uses it (runners made in the same second must not share a message hub
    or a logger)."""
    if experiment_name is not None:
        base = f"{experiment_name}_{timestamp}"
    elif cfg_filename is not None:
        stem = os.path.splitext(os.path.basename(cfg_filename))[0]
        base = f"{stem}_{timestamp}"
    else:
        base = timestamp
    name, n = base, 0
    while MessageHub.check_instance_created(name) or Visualizer.check_instance_created(name):
        n += 1
        name = f"{base}_{n}"
    return name


def make_log_dir(work_dir: str, timestamp: str) -> str:
    """A new ``<work_dir>/<timestamp>[_n]`` made by rank 0; every rank gets its path."""
    log_dir = None
    if dist.is_main_process():
        log_dir = os.path.join(work_dir, timestamp)
        n = 0
        while os.path.exists(log_dir):
            n += 1
            log_dir = os.path.join(work_dir, f"{timestamp}_{n}")
        os.makedirs(log_dir)
    log_dir = dist.broadcast_object(log_dir)
    os.makedirs(log_dir, exist_ok=True)
    return log_dir


def dist_cfg_used(env_cfg: dict, distributed: bool) -> str:
    """``dist_cfg`` as this run uses it: the backend the process group really has, or that
    one process needs none (the config's ``nccl`` means nothing on a CPU run)."""
    if not distributed:
        return "not used (one process, launcher none)"
    used = dict(env_cfg.get("dist_cfg") or {})
    if dist.is_distributed():
        used["backend"] = torch.distributed.get_backend()
    return f"{used}"


def environment_report(
    env_cfg: dict, seed: int, deterministic: bool, launcher: str, world_size: int
) -> str:
    """The system and runtime environment block written at the top of the log file."""
    distributed = launcher != "none"
    env = [
        f"    {k}: {dist_cfg_used(env_cfg, distributed) if k == 'dist_cfg' else v}"
        for k, v in env_cfg.items()
    ]
    lines = [
        "System environment:",
        f"    sys.platform: {sys.platform}",
        f"    Python: {sys.version.split()[0]}",
        f"    PyTorch: {torch.__version__}",
        f"    fastopt: {fastopt.__version__}",
        f"    CUDA available: {torch.cuda.is_available()}",
        "Runtime environment:",
        *env,
        f"    seed: {seed}",
        f"    deterministic: {deterministic}",
        f"    Distributed launcher: {launcher}",
        f"    Distributed training: {distributed}",
        f"    World size: {world_size}",
    ]
    dash = "-" * 60
    return "\n" + dash + "\n" + "\n".join(lines) + "\n" + dash + "\n"


def config_text(cfg: Any) -> str:
    """The config as Python source (its repr when it holds objects that have none)."""
    try:
        return cfg.pretty_text
    except Exception:  # a config holding objects cannot always be formatted as source
        return repr(cfg.to_dict())
