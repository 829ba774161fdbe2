"""Multi-process runs of the distributed tests: one place starts the ranks, joins them in a gloo
process group on a free local port and leaves it.

A rank whose work succeeded leaves with ``os._exit(0)`` after ``destroy_process_group``: in torch
2.13, gloo's threads may still be tearing down during interpreter finalization and abort the
process ("terminate called without an active exception", SIGABRT), which failed about one CI run
in five although every rank had finished and saved its results (pytorch/pytorch#179291 describes
the finalization race).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any, Callable

import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker: Callable[..., None], world: int, *args: Any) -> None:
    """Run ``worker(rank, world, *args)`` in ``world`` processes joined in one gloo group."""
    mp.spawn(_rank_main, args=(world, free_port(), worker, args), nprocs=world, join=True)


def _rank_main(rank: int, world: int, port: int, worker: Callable[..., None], args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        worker(rank, world, *args)
    finally:
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
