"""``ZeroRedundancyOptimizer`` in MMEngine's config form, for any registered optimizer.

``optim_wrapper=dict(optimizer=dict(type='ZeroRedundancyOptimizer', optimizer_type='FusedAdamW',
lr=1e-3, weight_decay=0.05))`` shards the optimizer state over the ranks of the process group
(ZeRO stage 1, ``torch.distributed.optim.ZeroRedundancyOptimizer``): each rank builds the
local optimizer -- looked up by name in ``OPTIMIZERS``, so fastopt's fused optimizers work as
well as torch's -- for its share of the parameters, steps it, and broadcasts the updated
parameters. MMEngine's class resolves ``optimizer_type`` in ``torch.optim`` only;
``optimizer_class`` (torch's argument name, a name or a class) is accepted too.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch.distributed.optim import ZeroRedundancyOptimizer as _TorchZeroRedundancyOptimizer

from fastopt.registry import OPTIMIZERS


def _local_optimizer_class(name_or_class: str | type) -> type:
    if isinstance(name_or_class, type):
        if not issubclass(name_or_class, torch.optim.Optimizer):
            raise TypeError(
                f"optimizer_type must be a torch.optim.Optimizer subclass, got {name_or_class}"
            )
        return name_or_class
    if not isinstance(name_or_class, str):
        raise TypeError(
            f"optimizer_type must be an optimizer name or class, got {type(name_or_class).__name__}"
        )
    cls = OPTIMIZERS.get(name_or_class)
    if cls is None:
        close = OPTIMIZERS.closest_names(name_or_class)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise KeyError(
            f"optimizer_type {name_or_class!r} of ZeroRedundancyOptimizer is not in the "
            f"optimizer registry.{hint}"
        )
    if cls is ZeroRedundancyOptimizer:
        raise ValueError("ZeroRedundancyOptimizer cannot shard another ZeroRedundancyOptimizer")
    return cls


@OPTIMIZERS.register_module()
class ZeroRedundancyOptimizer(_TorchZeroRedundancyOptimizer):
    """torch's ``ZeroRedundancyOptimizer`` built from a config (MMEngine's form).

    Args:
        params: parameters or param groups (every rank passes all of them).
        optimizer_type: the local optimizer, a registered name (``'FusedAdamW'``,
            ``'AdamW'``...) or a class.
        optimizer_class: the same, under torch's argument name (give one of the two).
        **kwargs: torch's ``process_group``, ``parameters_as_bucket_view``,
            ``overlap_with_ddp`` and the local optimizer's arguments (``lr``...).

    Needs an initialised process group (``launcher='pytorch'``). ``state_dict()`` gathers
    the shards on rank 0 (a collective: every rank must call it, as the runner does when it
    saves a checkpoint) and returns the full state there and ``{}`` elsewhere, as MMEngine's
    class does; ``load_state_dict`` takes that full state on every rank.
    """

    def __init__(
        self,
        params: Iterable[Any],
        optimizer_type: str | type | None = None,
        optimizer_class: str | type | None = None,
        **kwargs: Any,
    ) -> None:
        if (optimizer_type is None) == (optimizer_class is None):
            raise TypeError(
                "ZeroRedundancyOptimizer needs exactly one of optimizer_type (MMEngine's name) "
                "and optimizer_class, e.g. optimizer_type='FusedAdamW'"
            )
        if not torch.distributed.is_available() or not torch.distributed.is_initialized():
            raise RuntimeError(
                "ZeroRedundancyOptimizer shards the optimizer over a process group: start the "
                "run with torchrun and launcher='pytorch'"
            )
        local = _local_optimizer_class(optimizer_type or optimizer_class)  # type: ignore[arg-type]
        super().__init__(list(params), local, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """The full state on rank 0 (``{}`` on the other ranks); call it on every rank."""
        self.consolidate_state_dict(to=0)
        if torch.distributed.get_rank() == 0:
            return super().state_dict()
        return {}
