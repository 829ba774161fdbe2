"""DTensor params (FSDP2's ``fully_shard``): the engine updates their local shards.

An elementwise update of a sharded or replicated tensor is the same update of each local shard,
so a step hands the engine ``p._local_tensor`` and its grad's local shard. States are DTensors
with the param's mesh and placements, as torch's optimizers make them (``zeros_like`` of a
DTensor), so ``torch.distributed.checkpoint`` and ``get_optimizer_state_dict`` see torch's
layout. Reductions (the global grad norm, the inf/nan verdict, and the per-tensor norms of LARS
and LAMB) combine the shards' partial results with one all-reduce per mesh between the
engine's passes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
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


@dataclass(frozen=True)
class MeshReduction:
    """The params sharded over one device mesh: their partial norms add up over its group."""

    group: Any  # the mesh's process group
    tensor_ids: tuple[int, ...]  # the params' indices in their optimizer
    entries: tuple[int, ...]  # the entries of those with one in the plan


@dataclass(frozen=True)
class Reductions:
    """How the norms of an optimizer's tensors combine over processes: a sharded tensor's
    shards' partial results add up over its mesh (one all-reduce per mesh); a tensor whole on
    every process (a plain or replicated one) counts as it is, once."""

    meshes: tuple[MeshReduction, ...]
    whole_tensors: bool  # some tensor is plain or replicated

    @property
    def single_group(self) -> Any:
        """The group when every tensor is sharded over one mesh (one all-reduce of the folded
        total of all of them), else None."""
        return self.meshes[0].group if len(self.meshes) == 1 and not self.whole_tensors else None


def reductions(
    params: list[torch.Tensor], entry_of: list[int]
) -> tuple[Reductions | None, str | None]:
    """The Reductions of params whose entries (``entry_of``, -1: none) are given; (None, None)
    when no param is sharded, (None, why) when their norms cannot be combined."""
    by_mesh: dict[Any, list[int]] = {}
    whole = False
    for i, p in enumerate(params):
        if not is_dtensor(p) or all(pl.is_replicate() for pl in p.placements):
            whole = True
            continue
        if p.device_mesh.ndim != 1:
            return None, f"a {p.device_mesh.ndim}-D device mesh (HSDP)"
        by_mesh.setdefault(p.device_mesh, []).append(i)
    if not by_mesh:
        return None, None
    meshes = tuple(
        MeshReduction(
            mesh.get_group(), tuple(ids), tuple(entry_of[i] for i in ids if entry_of[i] >= 0)
        )
        for mesh, ids in by_mesh.items()
    )
    return Reductions(meshes, whole), None
