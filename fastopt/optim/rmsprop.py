"""FusedRMSprop: torch.optim.RMSprop semantics in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_lr, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedRMSprop(FusedOptimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    State per param: ``step``, ``square_avg``, ``momentum_buffer`` (with ``momentum > 0``) and
    ``grad_avg`` (``centered=True``), as torch; state dicts move between the two both ways.
    """

    _kind = "rmsprop"
    _load_defaults = dict(
        maximize=False, foreach=None, capturable=False, differentiable=False, centered=False
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        maximize: bool = False,
        **precision: Any,
    ) -> None:
        check_lr(lr)
        for name, value in (
            ("epsilon value", eps),
            ("momentum value", momentum),
            ("weight_decay value", weight_decay),
            ("alpha value", alpha),
        ):
            check_number(name, value)
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name}: {value}")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            # torch's keys, so a state dict loads into torch.optim.RMSprop unchanged
            capturable=False,
            foreach=None,
            maximize=maximize,
            differentiable=False,
        )
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        names = ("square_avg",)
        if group["momentum"] > 0:
            names += ("momentum_buffer",)
        if group["centered"]:
            names += ("grad_avg",)
        return StateSpec(names)

    def _state_spec_all(self) -> StateSpec:
        return StateSpec(("square_avg", "momentum_buffer", "grad_avg"))
