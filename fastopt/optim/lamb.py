"""FusedLAMB: LAMB as timm's / mmpretrain's ``Lamb`` (NVIDIA's NvLamb variant), fused."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_betas, check_lr, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedLAMB(FusedOptimizer):
    """LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning"), as
    ``timm.optim.Lamb`` and mmpretrain's ``Lamb``.

    Per tensor the Adam direction ``d = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps) + wd * p`` is
    scaled by the trust ratio ``||p|| / ||d||`` (1 when a norm is 0; only where ``weight_decay
    != 0`` or ``always_adapt=True``; at most 1 with ``trust_clip=True``). Both norms come from
    the engine's reduction pass in the same call, and the update pass recomputes ``d`` from the
    states. ``grad_averaging`` weighs new grads by ``1 - beta1``; ``bias_correction=False``
    drops ``bc1``/``bc2``. ``max_grad_norm`` (an optimizer setting, as in timm) divides all grads
    by ``max(1, total_norm / max_grad_norm)``, inside the fused pipeline; ``None`` disables it.

    State per param: ``exp_avg``, ``exp_avg_sq``; the step count is each group's ``step`` key,
    advanced once per ``step()`` for every group, as timm does. timm's ``caution`` and
    ``decoupled_decay`` are not offered (only their defaults are accepted).
    """

    _kind = "lamb"
    _counts_group_steps = True
    _load_defaults = dict(trust_clip=False, always_adapt=False)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        bias_correction: bool = True,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        grad_averaging: bool = True,
        max_grad_norm: float | None = 1.0,
        trust_clip: bool = False,
        always_adapt: bool = False,
        *,
        caution: bool = False,
        decoupled_decay: bool = False,
        foreach: bool | None = None,
        **precision: Any,
    ) -> None:
        check_lr(lr)
        check_betas(betas)
        for name, value in (("epsilon value", eps), ("weight_decay value", weight_decay)):
            check_number(name, value)
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name}: {value}")
        for i, beta in enumerate(betas):
            if not 0.0 <= beta < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {beta}")
        if max_grad_norm is not None:
            check_number("max_grad_norm", max_grad_norm)
            if max_grad_norm <= 0:
                raise ValueError(f"Invalid max_grad_norm: {max_grad_norm} (None disables it)")
        if caution or decoupled_decay:
            raise ValueError("FusedLAMB: timm's caution and decoupled_decay are not supported")
        del foreach  # accepted for config compatibility: the step is always fused
        defaults = dict(
            lr=lr,
            bias_correction=bias_correction,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            grad_averaging=grad_averaging,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
        )
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        return StateSpec(("exp_avg", "exp_avg_sq"))

    def _rescale_max_norm(self) -> float:
        return float(self.defaults.get("max_grad_norm") or 0.0)
