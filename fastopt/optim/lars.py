"""FusedLARS: the LARS rule of mmpretrain / mmselfsup in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_momentum_args, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedLARS(FusedOptimizer):
    """Layer-wise adaptive rate scaling (You et al. 2017) as mmpretrain's ``LARS``.

    Per tensor: ``local_lr = eta * ||p|| / (||g|| + weight_decay * ||p|| + eps)`` (1 when a norm
    is zero or the group sets ``lars_exclude=True``); the update ``(g + wd * p) * local_lr * lr``
    goes through the momentum buffer. The norms are computed by the engine in the same call.
    ``eps`` is also a group key here (mmpretrain keeps it as an optimizer attribute, which
    ``optimizer.eps`` still reads); a state dict without it gets the optimizer's.
    """

    _kind = "lars"

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
        **precision: Any,
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
            eps=eps,
        )
        super().__init__(params, defaults, **precision)

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        if group["momentum"] != 0:
            return StateSpec(("momentum_buffer",), fresh="momentum_buffer")
        return StateSpec(())

    def _state_spec_all(self) -> StateSpec:
        return StateSpec(("momentum_buffer",), fresh="momentum_buffer")

    @property
    def eps(self) -> float:
        """mmpretrain's attribute: the eps of groups that do not set their own."""
        return self.defaults["eps"]

    def __setstate__(self, state: dict[str, Any]) -> None:
        # a pickle of an older fastopt kept eps as an attribute; load_state_dict comes here too
        old_eps = state.pop("eps", None)
        super().__setstate__(state)
        if old_eps is not None:
            self.defaults.setdefault("eps", old_eps)
        for group in self.param_groups:
            group.setdefault("eps", self.defaults.get("eps", 1e-8))
