"""DTensor params (FSDP2's ``fully_shard``): the engine updates their local shards.

An elementwise update of a sharded or replicated tensor is the same update of each local shard,
so a step hands the engine ``p._local_tensor`` and its grad's local shard. States are DTensors
with the param's mesh and placements, as torch's optimizers make them (``zeros_like`` of a
DTensor), so ``torch.distributed.checkpoint`` and ``get_optimizer_state_dict`` see torch's
layout. Reductions (the global grad norm, the inf/nan verdict, and the per-tensor norms of LARS
and LAMB) combine the shards' partial results with one all-reduce over the mesh between the
engine's passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

try:  # torch builds without distributed support have no DTensor
    from torch.distributed.tensor import DTensor, Replicate, Shard
except ImportError:  # pragma: no cover - every wheel fastopt supports has it
    DTensor = None  # type: ignore[assignment,misc]


def is_dtensor(t: Any) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local(t: torch.Tensor) -> torch.Tensor:
    """The tensor whose memory the engine reads: a DTensor's local shard, else the tensor."""
    return t._local_tensor if is_dtensor(t) else t


def any_sharded(params: Iterable[Any]) -> bool:
    """Some param is a DTensor split over processes (not only replicated)."""
    return any(is_dtensor(p) and not all(pl.is_replicate() for pl in p.placements) for p in params)


def check_param(where: str, p: torch.Tensor) -> None:
    """Placements the local update handles: Shard(d) and Replicate (not Partial sums)."""
    for placement in p.placements:
        if not isinstance(placement, (Shard, Replicate)):
            raise TypeError(
                f"{where}: a DTensor param with placement {placement}; fused optimizers "
                "update Shard and Replicate placements"
            )
    if type(p._local_tensor) is not torch.Tensor:
        raise TypeError(
            f"{where}: the DTensor's local shard is a {type(p._local_tensor).__name__}, not a "
            "plain tensor"
        )


def check_like(where: str, what: str, t: Any, p: torch.Tensor) -> None:
    """A grad or state of DTensor param ``p`` is a DTensor with p's mesh and placements."""
    if not is_dtensor(t):
        raise TypeError(
            f"{where}: {what} is a {type(t).__name__}, its param a DTensor: both must be "
            "DTensors with one mesh and placement"
        )
    if t.device_mesh != p.device_mesh or tuple(t.placements) != tuple(p.placements):
        raise ValueError(
            f"{where}: {what} is laid out as {tuple(t.placements)} on {t.device_mesh}, its "
            f"param as {tuple(p.placements)} on {p.device_mesh}"
        )
    if type(t._local_tensor) is not torch.Tensor:
        raise TypeError(f"{where}: the local shard of {what} is not a plain tensor")


def like(p: torch.Tensor, shard: torch.Tensor) -> torch.Tensor:
    """A DTensor laid out as ``p`` whose local shard is ``shard``."""
    return DTensor.from_local(
        shard, p.device_mesh, p.placements, run_check=False, shape=p.shape, stride=p.stride()
    )


def reduction_group(params: list[torch.Tensor]) -> tuple[Any, str | None]:
    """The process group over which one all-reduce of shard partials gives every tensor's total
    exactly once, or (None, why not) when there is none (replicas would be counted again)."""
    meshes = {p.device_mesh for p in params if is_dtensor(p)}
    if not meshes:
        return None, None
    if len(meshes) > 1:
        return None, "params on several device meshes"
    if any(not is_dtensor(p) for p in params):
        return None, "plain params next to DTensor params (they would be counted once per rank)"
    (mesh,) = meshes
    if mesh.ndim != 1:
        return None, f"a {mesh.ndim}-D device mesh (HSDP)"
    if any(not isinstance(p.placements[0], Shard) for p in params):
        return None, "Replicate placements next to sharded params"
    return mesh.get_group(), None
