"""torch.distributed helpers the runner, its hooks and its metrics share.

Every function works without an initialised process group (one process: rank 0 of 1), so the
same code paths run in single-process training and under ``torchrun``. ``init_dist`` is the
one place that starts a process group (``launcher='pytorch'``: rank and world size from the
environment ``torchrun`` sets; gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from datetime import timedelta
from typing import Any, Callable, TypeVar

import numpy as np
import torch
import torch.distributed as dist

_F = TypeVar("_F", bound=Callable[..., Any])

LAUNCHERS = ("none", "pytorch")


def is_distributed() -> bool:
    """Whether a default process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def get_dist_info() -> tuple[int, int]:
    """``(rank, world_size)``."""
    return get_rank(), get_world_size()


def get_local_rank() -> int:
    """Rank on this machine (``LOCAL_RANK`` set by torchrun; 0 otherwise)."""
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    """Whether this is rank 0: the process that writes files and prints logs."""
    return get_rank() == 0


def master_only(func: _F) -> _F:
    """Run ``func`` on rank 0 only (returns None elsewhere)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if is_main_process():
            return func(*args, **kwargs)
        return None

    return wrapper  # type: ignore[return-value]


def barrier() -> None:
    """Wait for every process (no-op in one process)."""
    if is_distributed():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collective tensors must live: the GPU for NCCL, the CPU otherwise."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Copy ``tensor`` from rank ``src`` to every rank, in place; returns it."""
    if is_distributed():
        device = _comm_device()
        buf = tensor.to(device)
        dist.broadcast(buf, src)
        if buf is not tensor:
            tensor.copy_(buf.to(tensor.device))
    return tensor


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (picklable objects)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src, device=_comm_device())
    return box[0]


def all_reduce_mean(tensors: Iterable[torch.Tensor]) -> None:
    """Replace each tensor by its mean over all ranks, in place (e.g. BN buffers)."""
    if not is_distributed():
        return
    world = get_world_size()
    device = _comm_device()
    for tensor in tensors:
        if not (tensor.is_floating_point() or tensor.is_complex()):
            continue  # counters such as num_batches_tracked are not averaged
        buf = tensor.detach().to(device)
        dist.all_reduce(buf)
        buf.div_(world)
        tensor.data.copy_(buf.to(tensor.device))


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def collect_results(results: list[Any], size: int) -> list[Any]:
    """Gather per-rank result lists into one list in sample order, cut to ``size``.

    A ``DefaultSampler`` gives rank r the samples r, r + world, r + 2*world, ...; interleaving
    the rank lists restores dataset order, and the cut drops the samples that round-up padding
    repeated.
    """
    if not is_distributed():
        return list(results)[:size]
    lists = all_gather_object(list(results))
    ordered: list[Any] = []
    for i in range(max(len(items) for items in lists)):
        for items in lists:
            if i < len(items):  # without round-up padding the first ranks hold one more
                ordered.append(items[i])
    return ordered[:size]


def sync_random_seed() -> int:
    """A random seed that is the same on every rank (drawn on rank 0)."""
    seed = torch.tensor(np.random.randint(2**31), dtype=torch.int64)
    broadcast(seed, 0)
    return int(seed.item())


def init_dist(
    launcher: str, backend: str | None = None, timeout: int = 1800, **kwargs: Any
) -> None:
    """Start the default process group for ``launcher``.

    ``'pytorch'`` reads ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT`` (set by
    ``torchrun`` or ``torch.distributed.launch``); the backend defaults to NCCL when CUDA is
    available and gloo otherwise, and NCCL falls back to gloo on a CPU-only host. Each process
    uses GPU ``LOCAL_RANK``.
    """
    if launcher not in LAUNCHERS or launcher == "none":
        raise ValueError(
            f"launcher must be one of {LAUNCHERS[1:]} to start a process group, got {launcher!r}"
            " (slurm and mpi launchers are not supported yet)"
        )
    if is_distributed():
        return
    missing = [
        k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f"launcher='pytorch' needs the environment variables {missing}; start the script "
            "with `torchrun --nproc_per_node=N train.py ...`"
        )
    cuda = torch.cuda.is_available()
    if backend is None or (backend == "nccl" and not cuda):
        backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(get_local_rank() % torch.cuda.device_count())
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout), **kwargs)
