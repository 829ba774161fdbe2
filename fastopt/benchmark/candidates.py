"""The optimizers compared: fastopt's fused classes and torch.optim's implementations.

Implementations (``impl``):

* ``fastopt``: ``fastopt.FusedSGD`` / ``FusedAdam`` / ``FusedAdamW`` / ``FusedLARS``;
* ``for-loop``: ``torch.optim.X(foreach=False)``; for LARS, :class:`ReferenceLARS` (mmpretrain's
  per-param loop, the baseline its users run);
* ``foreach``: ``torch.optim.X(foreach=True)``;
* ``fused``: ``torch.optim.X(fused=True)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from fastopt.benchmark.param_sets import Params

IMPLS: tuple[str, ...] = ("fastopt", "for-loop", "foreach", "fused")
TORCH_IMPLS: tuple[str, ...] = IMPLS[1:]


@dataclass(frozen=True)
class OptimSpec:
    """One optimizer of the comparison and the hyperparameters it is benchmarked with."""

    name: str
    label: str
    fused_cls: str
    torch_cls: str | None
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: group keys set on the no-decay groups of paramwise sets
    paramwise_extra: dict[str, Any] = field(default_factory=dict)

    def impls(self) -> tuple[str, ...]:
        """The implementations that exist for this optimizer."""
        return IMPLS if self.torch_cls is not None else ("fastopt", "for-loop")


OPTIMS: dict[str, OptimSpec] = {
    s.name: s
    for s in (
        OptimSpec(
            "sgd", "SGD momentum", "FusedSGD", "SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-4)
        ),
        OptimSpec("adam", "Adam", "FusedAdam", "Adam", dict(lr=1e-3)),
        OptimSpec("adamw", "AdamW", "FusedAdamW", "AdamW", dict(lr=1e-3, weight_decay=1e-2)),
        OptimSpec(
            "lars",
            "LARS",
            "FusedLARS",
            None,
            dict(lr=0.3, momentum=0.9, weight_decay=1e-6, eta=1e-3),
            paramwise_extra=dict(lars_exclude=True),
        ),
    )
}


def get_optim(name: str) -> OptimSpec:
    try:
        return OPTIMS[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMS)}") from None


def reference_lars_class() -> type:
    """The class of the LARS baseline (built on first use: torch is imported lazily)."""
    import torch

    class ReferenceLARS(torch.optim.Optimizer):
        """mmpretrain's ``LARS`` written from its rule: one Python iteration per param."""

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
        ) -> None:
            defaults = dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                eta=eta,
            )
            self.eps = eps
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                wd, momentum = group["weight_decay"], group["momentum"]
                dampening, eta = group["dampening"], group["eta"]
                nesterov, lr = group["nesterov"], group["lr"]
                exclude = group.get("lars_exclude", False)
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    d_p = p.grad
                    if exclude:
                        local_lr = 1.0
                    else:
                        w = torch.norm(p).item()
                        g = torch.norm(d_p).item()
                        local_lr = eta * w / (g + wd * w + self.eps) if w != 0 and g != 0 else 1.0
                    d_p = d_p.add(p, alpha=wd).mul(local_lr * lr)
                    if momentum != 0:
                        state = self.state[p]
                        if "momentum_buffer" not in state:
                            buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                        else:
                            buf = state["momentum_buffer"]
                            buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                        d_p = d_p.add(buf, alpha=momentum) if nesterov else buf
                    p.add_(-d_p)
            return loss

    return ReferenceLARS


def build_optimizer(spec: OptimSpec | str, impl: str, params: Params) -> torch.optim.Optimizer:
    """A fresh optimizer of implementation ``impl`` over ``params`` (states not yet created)."""
    import torch

    if isinstance(spec, str):
        spec = get_optim(spec)
    if impl not in spec.impls():
        raise ValueError(f"{spec.name} has no {impl!r} implementation; it has {spec.impls()}")
    groups = params.param_groups(spec.paramwise_extra)
    if impl == "fastopt":
        import fastopt.optim

        cls = getattr(fastopt.optim, spec.fused_cls)
        state_dtype: Any = "param" if params.states_in_param_dtype else torch.float32
        return cls(groups, **spec.kwargs, state_dtype=state_dtype)
    if spec.torch_cls is None:  # the reference loop stands in for torch's for-loop
        return reference_lars_class()(groups, **spec.kwargs)
    flags = {"for-loop": dict(foreach=False), "foreach": dict(foreach=True)}.get(
        impl, dict(fused=True)
    )
    return getattr(torch.optim, spec.torch_cls)(groups, **spec.kwargs, **flags)
