"""FusedLARS: the LARS rule of mmpretrain / mmselfsup in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, StateDtype, check_momentum_args, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedLARS(FusedOptimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as mmpretrain's ``LARS``.

    Per tensor: ``local_lr = eta * ||p|| / (||g|| + weight_decay * ||p|| + eps)`` (1 when a norm
    is zero or the group sets ``lars_exclude=True``); the update ``(g + wd * p) * local_lr * lr``
    goes through the momentum buffer. The norms are computed by the engine in the same call.
    ``eps`` is an optimizer attribute, not a group key, as in mmpretrain.
    """

    _kind = "lars"
    _needs_tensor_norms = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        dampening: float = 0.0,
        eta: float = 0.001,
        nesterov: bool = False,
        eps: float = 1e-8,
        *,
        state_dtype: StateDtype = torch.float32,
    ) -> None:
        check_momentum_args(lr, momentum, dampening, weight_decay, nesterov)
        check_number("LARS coefficient value", eta)
        check_number("eps", eps)
        if eta < 0.0:
            raise ValueError(f"Invalid LARS coefficient value: {eta}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            eta=eta,
        )
        self.eps = eps
        super().__init__(params, defaults, state_dtype=state_dtype)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        if group["momentum"] != 0:
            return StateSpec(("momentum_buffer",), fresh="momentum_buffer")
        return StateSpec(())

    def _state_spec_all(self) -> StateSpec:
        return StateSpec(("momentum_buffer",), fresh="momentum_buffer")

    def _op_scalar(self) -> float:
        return float(self.eps)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["eps"] = self.eps
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("eps", getattr(self, "eps", 1e-8))  # load_state_dict comes here too
        super().__setstate__(state)
