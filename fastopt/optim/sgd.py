"""FusedSGD: torch.optim.SGD semantics in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_momentum_args
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedSGD(FusedOptimizer):
    """SGD with momentum, dampening, weight decay and Nesterov, as ``torch.optim.SGD``.

    State per param (when ``momentum != 0``): ``momentum_buffer``, as torch.
    """

    _kind = "sgd"
    _load_defaults = dict(
        nesterov=False, maximize=False, foreach=None, differentiable=False, fused=False
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        **precision: Any,
    ) -> None:
        check_momentum_args(lr, momentum, dampening, weight_decay, nesterov)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            # torch's keys, so a state dict loads into torch.optim.SGD unchanged
            foreach=None,
            differentiable=False,
            fused=None,
        )
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        if group["momentum"] != 0:
            return StateSpec(("momentum_buffer",), fresh="momentum_buffer")
        return StateSpec(())

    def _state_spec_all(self) -> StateSpec:
        return StateSpec(("momentum_buffer",), fresh="momentum_buffer")
