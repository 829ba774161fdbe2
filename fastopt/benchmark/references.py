"""Reference optimizers written from their published rules, one Python iteration per param.

They are what the fused optimizers are tested against where the implementation they follow
cannot be installed here (timm needs a torchvision this torch lacks), and the baselines the
benchmark times for them:

* :func:`reference_lars_class` — mmpretrain's ``LARS``;
* :func:`reference_lamb_class` — timm's / mmpretrain's ``Lamb`` (without caution or decoupled
  decay);
* :func:`reference_adan_class` — timm's ``Adan`` (without caution).

Classes are built on first use, so importing this module does not import torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any


def _item(x: Any) -> float:
    """A 0-dim result as a float; a DTensor's (FSDP2 params) is partial until gathered."""
    return float(x.full_tensor() if hasattr(x, "full_tensor") else x)


@cache
def reference_lars_class() -> type:
    import torch

    class ReferenceLARS(torch.optim.Optimizer):
        """mmpretrain's ``LARS`` written from its rule."""

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
                        w = _item(torch.norm(p))
                        g = _item(torch.norm(d_p))
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


@cache
def reference_lamb_class() -> type:
    import torch

    class ReferenceLamb(torch.optim.Optimizer):
        """timm's ``Lamb`` (NvLamb) written from its rule."""

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
        ) -> None:
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
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            grads = [p.grad for g in self.param_groups for p in g["params"] if p.grad is not None]
            divisor = None
            max_norm = self.defaults["max_grad_norm"]
            if max_norm is not None and grads:
                total = torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))
                divisor = (total / max_norm).clamp(min=1.0)
            for group in self.param_groups:
                beta1, beta2 = group["betas"]
                weight = 1 - beta1 if group["grad_averaging"] else 1.0
                group["step"] = group.get("step", 0) + 1
                t = group["step"]
                bc1 = 1 - beta1**t if group["bias_correction"] else 1.0
                bc2 = 1 - beta2**t if group["bias_correction"] else 1.0
                wd = group["weight_decay"]
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad if divisor is None else p.grad / divisor
                    state = self.state[p]
                    if not state:
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    if group["grad_averaging"]:
                        m.lerp_(grad, weight)
                    else:
                        m.mul_(beta1).add_(grad, alpha=weight)
                    v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                    d = (m / bc1).div_((v.sqrt() / math.sqrt(bc2)).add_(group["eps"]))
                    if wd != 0:
                        d.add_(p, alpha=wd)
                    if wd != 0 or group["always_adapt"]:
                        w_norm, d_norm = p.norm(), d.norm()
                        ratio = torch.where(
                            (w_norm > 0) & (d_norm > 0), w_norm / d_norm, torch.ones_like(w_norm)
                        )
                        if group["trust_clip"]:
                            ratio = ratio.clamp(max=1.0)
                        d.mul_(ratio)
                    p.add_(d, alpha=-group["lr"])
            return loss

    return ReferenceLamb


@cache
def reference_adan_class() -> type:
    import torch

    class ReferenceAdan(torch.optim.Optimizer):
        """timm's ``Adan`` written from its rule."""

        def __init__(
            self,
            params: Iterable[Any],
            lr: float = 1e-3,
            betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
            eps: float = 1e-8,
            weight_decay: float = 0.0,
            no_prox: bool = False,
        ) -> None:
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            for group in self.param_groups:
                beta1, beta2, beta3 = group["betas"]
                group["step"] = group.get("step", 0) + 1
                t = group["step"]
                lr, wd = group["lr"], group["weight_decay"]
                step_size = lr / (1 - beta1**t)
                step_size_diff = lr * beta2 / (1 - beta2**t)
                bc3_sqrt = math.sqrt(1 - beta3**t)
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    state = self.state[p]
                    if "exp_avg" not in state:
                        for key in ("exp_avg", "exp_avg_sq", "exp_avg_diff"):
                            state[key] = torch.zeros_like(p)
                    if "neg_pre_grad" not in state or t == 1:
                        state["neg_pre_grad"] = -grad.clone()
                    m, n, e = state["exp_avg"], state["exp_avg_sq"], state["exp_avg_diff"]
                    diff = state["neg_pre_grad"] + grad
                    m.mul_(beta1).add_(grad, alpha=1 - beta1)
                    e.mul_(beta2).add_(diff, alpha=1 - beta2)
                    u = diff.mul(beta2).add_(grad)
                    n.mul_(beta3).addcmul_(u, u, value=1 - beta3)
                    denom = (n.sqrt() / bc3_sqrt).add_(group["eps"])
                    if group["no_prox"]:
                        p.mul_(1 - lr * wd)
                    p.addcdiv_(m, denom, value=-step_size)
                    p.addcdiv_(e, denom, value=-step_size_diff)
                    if not group["no_prox"]:
                        p.div_(1 + lr * wd)
                    state["neg_pre_grad"] = -grad
            return loss

    return ReferenceAdan


_CLASSES = {
    "ReferenceLARS": reference_lars_class,
    "ReferenceLamb": reference_lamb_class,
    "ReferenceAdan": reference_adan_class,
}


def __getattr__(name: str) -> type:
    """``references.ReferenceLamb`` etc.: the classes, built on first access."""
    try:
        return _CLASSES[name]()
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
