"""Momentum schedulers: SGD ``momentum`` and Adam-style ``betas[0]``."""

from __future__ import annotations

import math

import pytest
import torch

from fastopt.registry import PARAM_SCHEDULERS
from fastopt.scheduler import (
    ConstantMomentum,
    CosineAnnealingMomentum,
    CosineRestartMomentum,
    ExponentialMomentum,
    LinearMomentum,
    MultiStepMomentum,
    PolyMomentum,
    ReduceOnPlateauMomentum,
    StepMomentum,
)

# These tests drive schedulers alone, with no optimizer step in between: the warning about
# calling scheduler.step() before optimizer.step() is expected here (it has its own tests).
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")


def param() -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.zeros(2))


def sgd(momentum: float = 0.95) -> torch.optim.SGD:
    return torch.optim.SGD([param()], lr=0.1, momentum=momentum)


def adam(beta1: float = 0.9) -> torch.optim.Adam:
    return torch.optim.Adam([param()], lr=0.1, betas=(beta1, 0.999))


def momenta(optimizer, schedulers, n: int) -> list[float]:
    out = []
    for _ in range(n):
        group = optimizer.param_groups[0]
        out.append(group["momentum"] if "momentum" in optimizer.defaults else group["betas"][0])
        for s in schedulers:
            s.step()
    return out


def close(actual, expected):
    assert actual == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_golden_cosine_momentum_on_sgd():
    opt = sgd(0.95)
    s = CosineAnnealingMomentum(opt, T_max=5, eta_min=0.85, end=5)
    golden = [0.95, 0.940450849719, 0.915450849719, 0.884549150281, 0.859549150281, 0.859549150281]
    close(momenta(opt, [s], 6), golden)


def test_golden_linear_momentum_on_adam_betas():
    opt = adam(0.9)
    s = LinearMomentum(opt, start_factor=0.5, end=4)
    close(momenta(opt, [s], 5), [0.45, 0.6, 0.75, 0.9, 0.9])
    group = opt.param_groups[0]
    assert isinstance(group["betas"], tuple) and group["betas"][1] == 0.999
    assert group["momentum"] == group["betas"][0]
    assert group["initial_momentum"] == 0.9


def test_adam_uses_the_scheduled_beta1():
    torch.manual_seed(0)
    grad = torch.randn(2)
    scheduled = adam(0.9)
    LinearMomentum(scheduled, start_factor=0.5, end=4)  # beta1 is now 0.45
    reference = torch.optim.Adam([param()], lr=0.1, betas=(0.45, 0.999))
    for opt in (scheduled, reference):
        opt.param_groups[0]["params"][0].grad = grad.clone()
        opt.step()
    a = scheduled.state[scheduled.param_groups[0]["params"][0]]["exp_avg"]
    b = reference.state[reference.param_groups[0]["params"][0]]["exp_avg"]
    assert torch.equal(a, b)


CASES = [
    (StepMomentum, dict(step_size=2, gamma=0.5), lambda b, t: b * 0.5 ** (t // 2)),
    (MultiStepMomentum, dict(milestones=[1, 4], gamma=0.5), lambda b, t: b * 0.5 ** ((t >= 1) + (t >= 4))),
    (ConstantMomentum, dict(factor=0.5, end=4), lambda b, t: b * 0.5 if t < 3 else b),
    (ExponentialMomentum, dict(gamma=0.9), lambda b, t: b * 0.9**t),
    (CosineAnnealingMomentum, dict(T_max=3, eta_min=0.5), lambda b, t: 0.5 + (b - 0.5) * (1 + math.cos(math.pi * t / 3)) / 2),
    (LinearMomentum, dict(start_factor=0.5, end=5), lambda b, t: b * (0.5 + 0.5 * min(t, 4) / 4)),
    (PolyMomentum, dict(eta_min=0.5, power=2.0, end=7), lambda b, t: 0.5 + (b - 0.5) * ((6 - min(t, 6)) / 6) ** 2),
    (CosineRestartMomentum, dict(periods=[3, 3], eta_min=0.5, restart_weights=[1, 1]),
     lambda b, t: 0.5 + (b - 0.5) * (1 + math.cos(math.pi * (min(t, 5) % 3) / 3)) / 2),
]  # fmt: skip


@pytest.mark.parametrize("cls, kwargs, closed", CASES, ids=[c[0].__name__ for c in CASES])
@pytest.mark.parametrize("make", [sgd, adam], ids=["sgd", "adam"])
def test_every_momentum_type_on_sgd_and_adam(cls, kwargs, closed, make):
    opt = make(0.9)
    s = cls(opt, **kwargs)
    close(momenta(opt, [s], 8), [closed(0.9, t) for t in range(8)])
    assert s.param_name == "momentum"
    assert s.use_betas is (make is adam)


def test_reduce_on_plateau_momentum_writes_betas():
    opt = adam(0.9)
    s = ReduceOnPlateauMomentum(opt, monitor="acc", rule="greater", patience=0, factor=0.5)
    s.step({"acc": 0.5})
    s.step({"acc": 0.4})
    assert opt.param_groups[0]["betas"] == (pytest.approx(0.45), 0.999)


def test_momentum_on_optim_wrapper_with_pseudo_group():
    from fastopt.wrapper import OptimWrapper

    opt = torch.optim.AdamW(
        [{"params": [param()]}, {"params": [param()], "betas": (0.8, 0.99)}],
        lr=0.1,
        betas=(0.9, 0.999),
    )
    wrapper = OptimWrapper(opt)
    s = PARAM_SCHEDULERS.build(
        dict(type="StepMomentum", step_size=1, gamma=0.5), default_args=dict(optimizer=wrapper)
    )
    s.step()
    assert [g["betas"] for g in wrapper.param_groups] == [
        (pytest.approx(0.45), 0.999),
        (pytest.approx(0.4), 0.99),
        (pytest.approx(0.45), 0.999),
    ]
    assert wrapper.get_momentum() == {"momentum": [pytest.approx(0.45), pytest.approx(0.4)]}


def test_momentum_resume_on_adam(tmp_path):
    opt = adam()
    full = momenta(opt, [CosineAnnealingMomentum(opt, T_max=6, eta_min=0.5)], 10)
    opt = adam()
    s = CosineAnnealingMomentum(opt, T_max=6, eta_min=0.5)
    head = momenta(opt, [s], 4)
    torch.save({"opt": opt.state_dict(), "s": s.state_dict()}, tmp_path / "c.pth")
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)
    opt2 = adam()
    s2 = CosineAnnealingMomentum(opt2, T_max=6, eta_min=0.5)
    opt2.load_state_dict(ckpt["opt"])
    s2.load_state_dict(ckpt["s"])
    close(head + momenta(opt2, [s2], 6), full)
    assert opt2.param_groups[0]["betas"][0] == pytest.approx(opt2.param_groups[0]["momentum"])


def test_momentum_scheduler_needs_momentum_or_betas():
    opt = torch.optim.Adagrad([param()], lr=0.1)
    with pytest.raises(
        ValueError, match=r"must support momentum.*Adagrad.*neither 'momentum' nor 'betas'"
    ):
        StepMomentum(opt, step_size=1)
    with pytest.raises(ValueError, match="Adagrad"):
        PARAM_SCHEDULERS.build(dict(type="LinearMomentum"), default_args=dict(optimizer=opt))
