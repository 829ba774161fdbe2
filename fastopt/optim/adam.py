"""FusedAdam and FusedAdamW: torch.optim.Adam / AdamW semantics in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_betas, check_lr, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedAdam(FusedOptimizer):
    """Adam, as ``torch.optim.Adam`` (``decoupled_weight_decay=True`` gives AdamW).

    State per param: ``step``, ``exp_avg``, ``exp_avg_sq`` (+ ``max_exp_avg_sq`` with amsgrad),
    as torch.

    On a GPU the step counts live on the device and a tensor ``lr`` on the params' device is read
    there, so a step can be captured in a CUDA graph and replayed; ``capturable=True`` (torch's
    flag) asks for that and is refused for CPU params.
    """

    _kind = "adam"
    _load_defaults = dict(
        amsgrad=False,
        maximize=False,
        foreach=None,
        capturable=False,
        differentiable=False,
        decoupled_weight_decay=False,
        fused=None,
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        capturable: bool = False,
        decoupled_weight_decay: bool = False,
        **precision: Any,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        for name, value in (("epsilon value", eps), ("weight_decay value", weight_decay)):
            check_number(name, value)
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            # torch's keys, so a state dict loads into torch.optim.Adam(W) unchanged
            foreach=None,
            capturable=capturable,
            differentiable=False,
            fused=None,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        if group["amsgrad"]:
            return StateSpec(("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), late=("max_exp_avg_sq",))
        return StateSpec(("exp_avg", "exp_avg_sq"))


@OPTIMIZERS.register_module()
class FusedAdamW(FusedAdam):
    """AdamW (decoupled weight decay, default 1e-2), as ``torch.optim.AdamW``."""

    _load_forced = dict(decoupled_weight_decay=True)  # an Adam state dict loads as AdamW

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        capturable: bool = False,
        **precision: Any,
    ) -> None:
        super().__init__(
            params,
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            capturable=capturable,
            decoupled_weight_decay=True,
            **precision,
        )
