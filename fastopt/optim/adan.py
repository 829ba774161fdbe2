"""FusedAdan: Adan as timm's (and the official sail-sg) implementation, in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_lr, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedAdan(FusedOptimizer):
    """Adan (Xie et al. 2022, "Adaptive Nesterov Momentum Algorithm"), as ``timm.optim.Adan``.

    State per param: ``exp_avg``, ``exp_avg_sq``, ``exp_avg_diff`` and ``neg_pre_grad`` (the
    previous grad, negated); the step count is each group's ``step`` key, advanced once per
    ``step()`` for every group, as timm does. ``no_prox=True`` decays weights before the update
    (AdamW style), else the update is followed by a division by ``1 + lr * weight_decay``.

    timm's ``caution`` and mmpretrain's ``max_grad_norm`` are not offered (only their defaults
    are accepted): clip with the wrapper's ``clip_grad`` instead.
    """

    _kind = "adan"
    _counts_group_steps = True
    _load_defaults = dict(no_prox=False)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: Sequence[float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        no_prox: bool = False,
        *,
        caution: bool = False,
        max_grad_norm: float = 0.0,
        foreach: bool | None = None,
        **precision: Any,
    ) -> None:
        check_lr(lr)
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 3:
            raise ValueError(f"betas must be a triple (beta1, beta2, beta3), got {betas!r}")
        for i, beta in enumerate(betas):
            check_number(f"beta parameter at index {i}", beta)
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        for name, value in (("epsilon value", eps), ("weight_decay value", weight_decay)):
            check_number(name, value)
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name}: {value}")
        if caution:
            raise ValueError("FusedAdan: caution=True (timm's cautious update) is not supported")
        if max_grad_norm:
            raise ValueError(
                "FusedAdan: max_grad_norm is not supported; clip with the optim wrapper's "
                "clip_grad=dict(max_norm=...) instead"
            )
        del foreach  # accepted for config compatibility: the step is always fused
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, no_prox=no_prox
        )
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        return StateSpec(
            ("exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad"), fresh="neg_pre_grad"
        )
