"""FusedAdagrad: torch.optim.Adagrad semantics in one fused pass."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from fastopt.ops.plan import StateSpec
from fastopt.optim.base import FusedOptimizer, check_lr, check_number
from fastopt.registry import OPTIMIZERS


@OPTIMIZERS.register_module()
class FusedAdagrad(FusedOptimizer):
    """Adagrad, as ``torch.optim.Adagrad`` (dense grads).

    State per param: ``step`` and ``sum`` (starting at ``initial_accumulator_value``), created
    when the optimizer is, as torch does, so state dicts move between the two both ways.
    """

    _kind = "adagrad"
    _load_defaults = dict(
        maximize=False, foreach=None, differentiable=False, fused=None, initial_accumulator_value=0
    )

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        *,
        maximize: bool = False,
        **precision: Any,
    ) -> None:
        check_lr(lr)
        for name, value in (
            ("lr_decay value", lr_decay),
            ("weight_decay value", weight_decay),
            ("initial_accumulator_value value", initial_accumulator_value),
            ("epsilon value", eps),
        ):
            check_number(name, value)
            if not 0.0 <= value:
                raise ValueError(f"Invalid {name}: {value}")
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            # torch's keys, so a state dict loads into torch.optim.Adagrad unchanged
            foreach=None,
            maximize=maximize,
            differentiable=False,
            fused=None,
        )
        super().__init__(params, defaults, **precision)
        # torch creates every state here (its step() needs them); so does this class
        for group in self.param_groups:
            for p in group["params"]:
                if isinstance(p, torch.Tensor) and not self.state[p]:
                    self.state[p]["step"] = torch.tensor(0.0)
                    self.state[p]["sum"] = torch.full_like(
                        p.detach(),
                        group["initial_accumulator_value"],
                        dtype=self._state_dtype_for(p),
                        memory_format=torch.preserve_format,
                    )

    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        return StateSpec(("sum",), init=(("sum", "initial_accumulator_value"),))
