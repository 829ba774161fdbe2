"""Reference implementations the fused optimizers are tested against."""

from __future__ import annotations

import torch


class ReferenceLARS(torch.optim.Optimizer):
    """LARS written from the rule (mmpretrain's algorithm, reference doc §2), one tensor at a time."""

    def __init__(
        self,
        params,
        lr,
        momentum=0.0,
        weight_decay=0.0,
        dampening=0.0,
        eta=0.001,
        nesterov=False,
        eps=1e-8,
    ):
        self.eps = eps
        super().__init__(
            params,
            dict(
                lr=lr,
                momentum=momentum,
                dampening=dampening,
                weight_decay=weight_decay,
                nesterov=nesterov,
                eta=eta,
            ),
        )

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            wd, momentum, dampening = group["weight_decay"], group["momentum"], group["dampening"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if group.get("lars_exclude", False):
                    local_lr = 1.0
                else:
                    w = torch.norm(p).item()
                    g = torch.norm(d_p).item()
                    local_lr = (
                        group["eta"] * w / (g + wd * w + self.eps) if w != 0 and g != 0 else 1.0
                    )
                d_p = d_p.add(p, alpha=wd)
                d_p *= local_lr * group["lr"]
                if momentum != 0:
                    state = self.state[p]
                    if "momentum_buffer" not in state:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf = state["momentum_buffer"]
                        buf.mul_(momentum).add_(d_p, alpha=1 - dampening)
                    d_p = d_p.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(-d_p)


TORCH_FOR_LOOP = {
    "FusedSGD": lambda params, **kw: torch.optim.SGD(params, foreach=False, **kw),
    "FusedAdam": lambda params, **kw: torch.optim.Adam(params, foreach=False, **kw),
    "FusedAdamW": lambda params, **kw: torch.optim.AdamW(params, foreach=False, **kw),
    "FusedLARS": lambda params, **kw: ReferenceLARS(params, **kw),
}
