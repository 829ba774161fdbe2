"""FusedLion: Lion as the lion-pytorch package, in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_betas, check_lr, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedLion(FusedOptimizer):
    """Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as
    ``lion_pytorch.Lion``: ``p *= 1 - lr * wd``, ``p -= lr * sign(beta1 * m + (1 - beta1) * g)``,
    ``m = beta2 * m + (1 - beta2) * g``.

    State per param: ``exp_avg``, as lion-pytorch. Its ``decoupled_weight_decay`` option (weight
    decay divided by the initial lr) is not offered: scale ``weight_decay`` instead.
    """

    _kind = "lion"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        **precision: Any,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        check_number("weight_decay value", weight_decay)
        for i, beta in enumerate(betas):
            if not 0.0 <= beta <= 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        return StateSpec(("exp_avg",))
