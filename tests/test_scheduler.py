"""Parameter schedulers: every type against its closed form, MMEngine goldens, chaining."""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import pytest
import torch

from fastopt.registry import PARAM_SCHEDULERS
from fastopt.scheduler import (
    INF,
    ConstantLR,
    ConstantParamScheduler,
    CosineAnnealingLR,
    CosineAnnealingParamScheduler,
    CosineRestartLR,
    ExponentialLR,
    LinearLR,
    LinearParamScheduler,
    MultiStepLR,
    OneCycleLR,
    PolyLR,
    ReduceOnPlateauLR,
    StepLR,
    StepParamScheduler,
    build_param_schedulers,
)

# These tests drive schedulers alone, with no optimizer step in between: the warning about
# calling scheduler.step() before optimizer.step() is expected here (it has its own tests).
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")

BASE = 0.1


def sgd(lr: float = BASE, n_groups: int = 1, **kwargs) -> torch.optim.SGD:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(n_groups)]
    return torch.optim.SGD(groups, lr=lr, **kwargs)


def lrs(optimizer, schedulers, n: int, key: str = "lr", group: int = 0) -> list[float]:
    """Values used by iterations 0..n-1, stepping like the runner's per-iteration hook."""
    out = []
    for _ in range(n):
        out.append(optimizer.param_groups[group][key])
        for s in schedulers:
            s.step()
    return out


def close(actual, expected, abs_tol: float = 1e-12):
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a == pytest.approx(e, rel=1e-10, abs=abs_tol), f"step {i}: {a} != {e}"


def frozen_after(closed, end: int, n: int) -> list[float]:
    """A closed form that acts on [0, end) and keeps its last value afterwards."""
    return [closed(min(t, end - 1)) for t in range(n)]


# ---------------------------------------------------------------- closed forms


def test_step_two_periods_and_past_end():
    opt = sgd()
    s = StepLR(opt, step_size=3, gamma=0.5, end=8)
    close(lrs(opt, [s], 14), frozen_after(lambda t: BASE * 0.5 ** (t // 3), 8, 14))


def test_step_with_begin_is_relative_to_begin():
    opt = sgd()
    s = StepLR(opt, step_size=2, gamma=0.1, begin=3)
    expected = [BASE] * 3 + [BASE * 0.1 ** ((t - 3) // 2) for t in range(3, 10)]
    close(lrs(opt, [s], 10), expected)


def test_multistep_milestones_stack_and_begin():
    opt = sgd()
    s = MultiStepLR(opt, milestones=[2, 5, 5], gamma=0.5)
    close(lrs(opt, [s], 8), [BASE * 0.5 ** sum(m <= t for m in [2, 5, 5]) for t in range(8)])
    # golden g1: MultiStepLR(milestones=[3, 6]) drops at 3 and 6; with begin=2 at 5 and 8
    opt = sgd()
    close(lrs(opt, [MultiStepLR(opt, milestones=[3, 6])], 9), [0.1] * 3 + [0.01] * 3 + [0.001] * 3)
    opt = sgd()
    got = lrs(opt, [MultiStepLR(opt, milestones=[3, 6], begin=2)], 10)
    close(got, [0.1] * 5 + [0.01] * 3 + [0.001] * 2)


def test_constant_restores_one_step_before_end():
    opt = sgd()
    close(lrs(opt, [ConstantLR(opt, factor=0.5, end=4)], 7), [0.05, 0.05, 0.05, 0.1, 0.1, 0.1, 0.1])
    opt = sgd()
    got = lrs(opt, [ConstantLR(opt, factor=0.25, begin=2, end=6)], 8)
    close(got, [0.1, 0.1, 0.025, 0.025, 0.025, 0.1, 0.1, 0.1])


def test_exponential_until_end():
    opt = sgd()
    close(
        lrs(opt, [ExponentialLR(opt, gamma=0.9, end=6)], 10),
        frozen_after(lambda t: BASE * 0.9**t, 6, 10),
    )


@pytest.mark.parametrize("eta_min, ratio", [(0.01, None), (None, 0.2), (None, None)])
def test_cosine_is_periodic_without_end(eta_min, ratio):
    eta = (eta_min or 0.0) if ratio is None else BASE * ratio
    opt = sgd()
    s = CosineAnnealingLR(opt, T_max=5, eta_min=eta_min, eta_min_ratio=ratio)
    expected = [eta + (BASE - eta) * (1 + math.cos(math.pi * t / 5)) / 2 for t in range(21)]
    close(lrs(opt, [s], 21), expected)  # 2 full periods: down to eta at 5, back up at 10...


def test_cosine_default_t_max_is_window_and_frozen_after():
    opt = sgd()
    s = CosineAnnealingLR(opt, begin=2, end=10)  # T_max = 8: the last value is not eta_min
    closed = [BASE] * 2 + [BASE * (1 + math.cos(math.pi * t / 8)) / 2 for t in range(8)]
    close(lrs(opt, [s], 14), closed + [closed[-1]] * 4)
    assert closed[-1] > 0


def test_linear_warmup_and_decay():
    opt = sgd()
    s = LinearLR(opt, start_factor=0.25, end_factor=1.0, end=5)
    close(lrs(opt, [s], 9), frozen_after(lambda t: BASE * (0.25 + 0.75 * t / 4), 5, 9))
    opt = sgd()
    s = LinearLR(opt, start_factor=1.0, end_factor=0.1, begin=1, end=11)
    expected = [BASE] + [BASE * (1.0 - 0.9 * t / 9) for t in range(10)] + [BASE * 0.1] * 3
    close(lrs(opt, [s], 14), expected)


def test_linear_without_end_stays_near_start():
    opt = sgd()
    got = lrs(opt, [LinearLR(opt, start_factor=0.5)], 20)
    assert got[0] == pytest.approx(0.05)
    assert got[-1] == pytest.approx(0.05, rel=1e-6)


@pytest.mark.parametrize("power", [1.0, 2.0, 0.9])
def test_poly_reaches_eta_min_at_end_minus_one(power):
    opt = sgd()
    s = PolyLR(opt, eta_min=0.001, power=power, end=10)
    closed = lambda t: 0.001 + (BASE - 0.001) * ((9 - t) / 9) ** power  # noqa: E731
    got = lrs(opt, [s], 13)
    close(got, frozen_after(closed, 10, 13))
    assert got[9] == pytest.approx(0.001)


def test_poly_golden():
    opt = sgd()
    got = lrs(opt, [PolyLR(opt, power=1, eta_min=0, end=10)], 12)
    close(got, [0.1 * (9 - t) / 9 for t in range(10)] + [0.0, 0.0])


def test_one_cycle_golden_and_limit():
    opt = sgd()
    s = OneCycleLR(opt, eta_max=1, total_steps=10)
    golden = [0.04, 0.52, 1.0, 0.950484632013, 0.81174565395, 0.611262021936,
              0.388741978064, 0.18825834605, 0.049519367987, 4e-06]  # fmt: skip
    close(lrs(opt, [s], 10), golden)
    assert opt.param_groups[0]["initial_lr"] == pytest.approx(0.04)
    assert s.last_step == 10  # step 10 == total_steps is still allowed (MMEngine)
    with pytest.raises(ValueError, match="total_steps is 10"):
        s.step()


def test_one_cycle_linear_three_phase_closed_form():
    opt = sgd()
    s = OneCycleLR(opt, eta_max=0.5, total_steps=20, pct_start=0.25, anneal_strategy="linear",
                   three_phase=True, div_factor=10, final_div_factor=100)  # fmt: skip
    init, top, low = 0.05, 0.5, 0.0005
    p1, p2, p3 = 4.0, 8.0, 19.0  # phase ends: pct*T-1, 2*pct*T-2, T-1

    def closed(t):
        if t <= p1:
            return init + (top - init) * t / p1
        if t <= p2:
            return top + (init - top) * (t - p1) / (p2 - p1)
        return init + (low - init) * (t - p2) / (p3 - p2)

    close(lrs(opt, [s], 20), [closed(t) for t in range(20)])


def test_one_cycle_end_defaults_total_steps():
    opt = sgd()
    s = OneCycleLR(opt, eta_max=1.0, end=10)
    assert s.total_steps == 10


def test_cosine_restart_golden_and_ratio():
    opt = sgd()
    s = CosineRestartLR(opt, periods=[4, 4], restart_weights=[1, 0.5], eta_min=0)
    golden = [0.1, 0.085355339059, 0.05, 0.014644660941, 0.05, 0.04267766953, 0.025,
              0.00732233047, 0.00732233047, 0.00732233047]  # fmt: skip
    close(lrs(opt, [s], 10), golden)

    opt = sgd()
    s = CosineRestartLR(opt, periods=[3, 5], restart_weights=[1, 0.8], eta_min_ratio=0.1)
    eta = BASE * 0.1

    def closed(t):
        if t < 3:
            return eta + (BASE - eta) * (1 + math.cos(math.pi * t / 3)) / 2
        if t < 8:
            return eta + (BASE * 0.8 - eta) * (1 + math.cos(math.pi * (t - 3) / 5)) / 2
        return closed(7)

    close(lrs(opt, [s], 11), [closed(t) for t in range(11)])


def test_generic_scheduler_drives_any_key():
    opt = sgd(weight_decay=1e-4)
    s = StepParamScheduler(opt, "weight_decay", step_size=2, gamma=0.5)
    close(lrs(opt, [s], 6, key="weight_decay"), [1e-4 * 0.5 ** (t // 2) for t in range(6)])
    assert opt.param_groups[0]["initial_weight_decay"] == 1e-4
    assert opt.param_groups[0]["lr"] == BASE


# ---------------------------------------------------------------- chains


GOLDEN_WARMUP_COSINE = [0.01, 0.0325, 0.055, 0.0775, 0.1, 0.1, 0.098907380037, 0.095677272882,
    0.090450849719, 0.083456530318, 0.075, 0.065450849719, 0.055226423163, 0.044773576837,
    0.034549150281, 0.025, 0.016543469682, 0.009549150281, 0.004322727118, 0.001092619963]  # fmt: skip
GOLDEN_OVERLAP = [0.01, 0.032299935535, 0.053654054198, 0.073276502812, 0.090450849719,
    0.085355339059, 0.079389262615, 0.072699524987, 0.065450849719, 0.057821723252, 0.05,
    0.042178276748, 0.034549150281, 0.027300475013, 0.020610737385, 0.014644660941,
    0.009549150281, 0.005449673791, 0.002447174185, 0.00061558297]  # fmt: skip


@pytest.mark.parametrize("t_max", [15, None])
def test_golden_warmup_then_cosine(t_max):
    opt = sgd()
    chain = [
        LinearLR(opt, start_factor=0.1, by_epoch=False, begin=0, end=5),
        CosineAnnealingLR(opt, T_max=t_max, by_epoch=False, begin=5, end=20),
    ]
    close(lrs(opt, chain, 20), GOLDEN_WARMUP_COSINE)


def test_golden_overlapping_windows_multiply():
    opt = sgd()
    chain = [
        LinearLR(opt, start_factor=0.1, by_epoch=False, begin=0, end=5),
        CosineAnnealingLR(opt, T_max=20, by_epoch=False, begin=0, end=20),
    ]
    got = lrs(opt, chain, 20)
    close(got, GOLDEN_OVERLAP)
    # the product of the two closed forms
    linear = [0.1 + 0.9 * min(t, 4) / 4 for t in range(20)]
    cosine = [BASE * (1 + math.cos(math.pi * t / 20)) / 2 for t in range(20)]
    close(got, [a * b for a, b in zip(linear, cosine)])


def test_overlapping_multistep_and_exponential_multiply():
    opt = sgd()
    chain = [
        MultiStepLR(opt, milestones=[3], gamma=0.5),
        ExponentialLR(opt, gamma=0.9, begin=1, end=6),
    ]
    expected = [BASE * 0.5 ** (t >= 3) * 0.9 ** max(0, min(t, 5) - 1) for t in range(9)]
    close(lrs(opt, chain, 9), expected)


def test_initial_value_is_fixed_by_first_scheduler():
    opt = sgd()
    LinearLR(opt, start_factor=0.5, end=3)  # lr is now 0.05
    second = CosineAnnealingLR(opt, T_max=4)
    assert opt.param_groups[0]["initial_lr"] == BASE
    assert second.base_values == [BASE]


# ---------------------------------------------------------------- groups, optimizers


def test_each_group_scaled_from_its_own_value():
    opt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2},
         {"params": [torch.nn.Parameter(torch.zeros(1))]}],
        lr=0.1,
    )  # fmt: skip
    s = StepLR(opt, step_size=1, gamma=0.5)
    s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.05])
    assert s.get_last_value() == pytest.approx([0.1, 0.05])


class ReadsGroupLR(torch.optim.Optimizer):
    """Like a fused optimizer: reads group['lr'] when it steps, nothing cached."""

    def __init__(self, params, lr):
        super().__init__(params, dict(lr=lr))
        self.used: list[float] = []

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            self.used.append(group["lr"])
            for p in group["params"]:
                p.add_(torch.ones_like(p), alpha=-group["lr"])


def test_optimizer_that_reads_group_lr_follows_schedule():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = ReadsGroupLR([p], lr=0.1)
    groups_list, group = opt.param_groups, opt.param_groups[0]
    chain = [LinearLR(opt, start_factor=0.1, begin=0, end=5, by_epoch=False),
             CosineAnnealingLR(opt, begin=5, end=20, by_epoch=False)]  # fmt: skip
    for _ in range(20):
        opt.step()
        for s in chain:
            s.step()
    close(opt.used, GOLDEN_WARMUP_COSINE)
    assert opt.param_groups is groups_list and opt.param_groups[0] is group
    assert p.item() == pytest.approx(-sum(GOLDEN_WARMUP_COSINE))


def test_optim_wrapper_pseudo_group_is_scheduled():
    from fastopt.wrapper import OptimWrapper

    opt = torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]},
         {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.01}],
        lr=0.1, momentum=0.9,
    )  # fmt: skip
    wrapper = OptimWrapper(opt)
    assert len(wrapper.param_groups) == 3
    s = StepLR(wrapper, step_size=1, gamma=0.5)
    s.step()
    assert wrapper.get_lr() == {
        "base_lr": [pytest.approx(0.05)],
        "lr": pytest.approx([0.05, 0.005]),
    }
    assert s.base_values == [0.1, 0.01, 0.1]
    plateau = ReduceOnPlateauLR(wrapper, min_value=[0.04, 0.001], patience=0)
    assert plateau.min_values == [0.04, 0.001, 0.001]


# ---------------------------------------------------------------- registry, build, convert


def test_registered_under_mmengine_names():
    names = set(PARAM_SCHEDULERS.registered_names())
    for stem in ["Constant", "CosineAnnealing", "CosineRestart", "Exponential", "Linear",
                 "MultiStep", "OneCycle", "Poly", "ReduceOnPlateau", "Step"]:  # fmt: skip
        assert f"{stem}ParamScheduler" in names
        assert f"{stem}LR" in names
        assert f"{stem}Momentum" in names or stem == "OneCycle"


def test_convert_to_iter_based_scales_epoch_arguments():
    opt = sgd()
    s = PARAM_SCHEDULERS.build(
        dict(type="StepLR", step_size=2, begin=1, end=5, by_epoch=True, convert_to_iter_based=True),
        default_args=dict(optimizer=opt, epoch_length=4),
    )
    assert (s.by_epoch, s.begin, s.end, s.step_size) == (False, 4, 20, 8)
    got = lrs(opt, [s], 24)
    close(got, [BASE] * 4 + [BASE * 0.1 ** ((t - 4) // 8) for t in range(4, 20)] + [got[19]] * 4)

    cases = {
        "MultiStepLR": (
            dict(milestones=[1, 3]),
            "milestones",
            __import__("collections").Counter([5, 15]),
        ),
        "CosineAnnealingLR": (dict(T_max=2), "T_max", 10),
        "CosineRestartLR": (
            dict(periods=[1, 2], restart_weights=[1, 1], eta_min=0),
            "periods",
            [5, 10],
        ),
        "OneCycleLR": (dict(eta_max=1.0, total_steps=2), "total_steps", 10),
    }
    for type_name, (extra, attr, expected) in cases.items():
        s = PARAM_SCHEDULERS.build(
            dict(type=type_name, convert_to_iter_based=True, end=3, **extra),
            default_args=dict(optimizer=sgd(), epoch_length=5),
        )
        assert getattr(s, attr) == expected, type_name
        assert s.end == 15 and not s.by_epoch


def test_convert_keeps_fractional_epochs_and_infinite_end():
    s = LinearLR.build_iter_from_epoch(sgd(), start_factor=0.5, begin=0.5, epoch_length=10)
    assert (s.begin, s.end) == (5, INF)


def test_golden_runner_warmup_and_multistep_with_state():
    """golden g5: 4 iterations per epoch, 6 epochs, as the runner builds and steps them."""
    opt = sgd()
    cfg = [
        dict(
            type="LinearLR",
            start_factor=0.1,
            by_epoch=True,
            begin=0,
            end=1,
            convert_to_iter_based=True,
        ),
        dict(type="MultiStepLR", by_epoch=True, milestones=[3, 5]),
    ]
    scheds = build_param_schedulers(cfg, opt, epoch_length=4, max_epochs=6, max_iters=24)
    seen = []
    for _ in range(6):
        for _ in range(4):
            seen.append(opt.param_groups[0]["lr"])
            for s in scheds:
                if not s.by_epoch:
                    s.step()
        for s in scheds:
            if s.by_epoch:
                s.step()
    close(seen[:4], [0.01, 0.04, 0.07, 0.1])
    close(seen[4:12], [0.1] * 8)
    close(seen[12:20], [0.01] * 8)
    close(seen[20:], [0.001] * 4)
    linear, multistep = (s.state_dict() for s in scheds)
    assert {
        k: linear[k]
        for k in ("begin", "end", "total_iters", "by_epoch", "last_step", "_global_step")
    } == dict(begin=0, end=4, total_iters=3, by_epoch=False, last_step=3, _global_step=24)
    assert (multistep["milestones"], multistep["end"], multistep["last_step"], multistep["_global_step"]) == (
        {3: 1, 5: 1}, 6, 5, 6
    )  # fmt: skip


def test_state_dict_keys_match_mmengine():
    s = LinearLR(sgd(), start_factor=0.1, end=5)
    assert sorted(s.state_dict()) == sorted(
        ["_global_step", "_last_value", "base_values", "begin", "by_epoch", "end",
         "end_factor", "last_step", "param_name", "start_factor", "total_iters", "verbose"]
    )  # fmt: skip


def test_build_param_schedulers_defaults_end_like_runner():
    opt = sgd()
    a, b = build_param_schedulers(
        [dict(type="PolyLR", by_epoch=False), dict(type="CosineAnnealingLR")],
        opt, epoch_length=3, max_epochs=7, max_iters=21,
    )  # fmt: skip
    assert (a.end, b.end, b.T_max) == (21, 7, 7)
    built = build_param_schedulers(a, opt)
    assert built == [a]


# ---------------------------------------------------------------- ReduceOnPlateau


def test_reduce_on_plateau_patience_cooldown_and_min():
    opt = sgd()
    s = ReduceOnPlateauLR(opt, monitor="loss", patience=1, cooldown=1, factor=0.5, min_value=0.03)
    assert opt.param_groups[0]["lr"] == BASE  # no step in the constructor
    seen = []
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95]:
        s.step()  # after the training epoch: only counts
        s.step({"loss": loss, "acc": 0.0})
        seen.append(opt.param_groups[0]["lr"])
    # improvement, improvement, bad, bad -> cut; cooldown eats one; bad, bad -> cut, but
    # not below min_value
    assert seen == pytest.approx([0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.03, 0.03, 0.03])
    s2 = ReduceOnPlateauLR(sgd(0.04), patience=0, factor=0.5, min_value=0.03)
    s2.step({"loss": 1.0})
    s2.step({"loss": 2.0})
    assert s2.optimizer.param_groups[0]["lr"] == pytest.approx(0.03)  # clipped at min_value


@pytest.mark.parametrize(
    "rule, threshold_rule, values, cut_after",
    [("greater", "abs", [0.5, 0.7, 0.75], 3), ("greater", "rel", [0.5, 0.7, 0.7], 3),
     ("less", "abs", [1.0, 0.5, 0.45], 3)],
)  # fmt: skip
def test_reduce_on_plateau_rules(rule, threshold_rule, values, cut_after):
    opt = sgd()
    s = ReduceOnPlateauLR(
        opt, monitor="m", rule=rule, threshold=0.1, threshold_rule=threshold_rule, patience=0
    )
    for v in values:
        s.step({"m": v})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert s.last_step == cut_after - 1


def test_reduce_on_plateau_window_counts_epochs():
    opt = sgd()
    s = ReduceOnPlateauLR(opt, patience=0, begin=2, end=3)
    s.step({"loss": 1.0})
    s.step({"loss": 2.0})  # global step 0: outside the window
    assert opt.param_groups[0]["lr"] == BASE
    s.step()
    s.step()
    s.step({"loss": 1.0})
    s.step({"loss": 3.0})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)


# ---------------------------------------------------------------- state dict resume


RESUMABLE = [
    (StepLR, dict(step_size=3, gamma=0.5)),
    (MultiStepLR, dict(milestones=[2, 7], gamma=0.5)),
    (ConstantLR, dict(factor=0.5, end=9)),
    (ExponentialLR, dict(gamma=0.9)),
    (CosineAnnealingLR, dict(T_max=6, eta_min=0.01)),
    (LinearLR, dict(start_factor=0.2, end=8)),
    (PolyLR, dict(power=2.0, end=12)),
    (OneCycleLR, dict(eta_max=0.5, total_steps=12)),
    (CosineRestartLR, dict(periods=[4, 6], restart_weights=[1, 0.5], eta_min=0.0)),
]


@pytest.mark.parametrize("cls, kwargs", RESUMABLE, ids=lambda x: getattr(x, "__name__", ""))
def test_resume_mid_sequence_continues_same_values(cls, kwargs, tmp_path):
    opt = sgd()
    full = lrs(opt, [cls(opt, by_epoch=False, **kwargs)], 12)

    opt = sgd()
    first = cls(opt, by_epoch=False, **kwargs)
    head = lrs(opt, [first], 5)
    torch.save({"opt": opt.state_dict(), "sched": first.state_dict()}, tmp_path / "ckpt.pth")

    ckpt = torch.load(tmp_path / "ckpt.pth", weights_only=True)
    opt2 = sgd()
    second = cls(opt2, by_epoch=False, **kwargs)  # constructor applies step 0 again...
    opt2.load_state_dict(ckpt["opt"])  # ...which the optimizer state overrides
    second.load_state_dict(ckpt["sched"])
    tail = lrs(opt2, [second], 7)
    close(head + tail, full)


def test_resume_without_state_dict_needs_initial_value():
    with pytest.raises(KeyError, match="initial_lr.*param_groups\\[0\\]"):
        StepLR(sgd(), step_size=2, last_step=3)
    opt = sgd()
    opt.param_groups[0]["initial_lr"] = 0.2
    s = StepLR(opt, step_size=2, last_step=3)
    assert s.last_step == 4 and s.base_values == [0.2]


# ---------------------------------------------------------------- errors


def test_end_must_be_after_begin():
    with pytest.raises(ValueError, match="end should be larger than begin, but got begin=5, end=5"):
        StepLR(sgd(), step_size=1, begin=5, end=5)
    with pytest.raises(ValueError, match="begin=3, end=1"):
        ReduceOnPlateauLR(sgd(), begin=3, end=1)


@pytest.mark.parametrize(
    "cls, kwargs, match",
    [
        (ConstantLR, dict(factor=1.5), "factor"),
        (ConstantLR, dict(factor=-0.1), "factor"),
        (ConstantLR, dict(factor=0), "factor .* must not be 0"),
        (LinearLR, dict(start_factor=1.2), "start_factor"),
        (LinearLR, dict(start_factor=0), "start_factor .* must not be 0: .* divides by zero"),
        (LinearLR, dict(end_factor=-1), "end_factor"),
        (ReduceOnPlateauLR, dict(factor=1.0), "factor should be < 1.0"),
        (StepLR, dict(step_size=0), "step_size"),
        (
            CosineAnnealingLR,
            dict(eta_min=0.1, eta_min_ratio=0.1),
            "either eta_min or eta_min_ratio",
        ),
        (CosineRestartLR, dict(periods=[2, 2], restart_weights=[1], eta_min=0), "same length"),
        (CosineRestartLR, dict(periods=[2]), "eta_min"),
        (OneCycleLR, dict(eta_max=1, total_steps=0), "total_steps"),
        (OneCycleLR, dict(eta_max=1, anneal_strategy="exp"), "anneal_strategy"),
        (ReduceOnPlateauLR, dict(rule="more"), "rule"),
    ],
)
def test_bad_arguments_are_explained(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(sgd(), **kwargs)


def test_other_errors():
    with pytest.raises(TypeError, match="param_groups, but got int"):
        StepLR(3, step_size=1)
    with pytest.raises(ValueError, match="only works for the learning rate"):
        from fastopt.scheduler import OneCycleParamScheduler

        OneCycleParamScheduler(sgd(momentum=0.9), "momentum", eta_max=1)
    with pytest.raises(KeyError, match="has no 'momentum'"):
        LinearParamScheduler(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), "momentum")
    with pytest.raises(ValueError, match="epoch_length"):
        LinearLR.build_iter_from_epoch(sgd(), epoch_length=0)
    with pytest.raises(ValueError, match="by_epoch=True"):
        LinearLR.build_iter_from_epoch(sgd(), by_epoch=False, epoch_length=3)
    with pytest.raises(
        ValueError, match="expected 1 values for max_lr|expected 1 values for eta_max"
    ):
        OneCycleLR(sgd(), eta_max=[1.0, 2.0, 3.0], total_steps=5)


def test_reduce_on_plateau_names_missing_metric():
    s = ReduceOnPlateauLR(sgd(), monitor="val_loss")
    with pytest.raises(KeyError, match=r"monitors 'val_loss'.*\['acc', 'loss'\]"):
        s.step({"loss": 1.0, "acc": 0.5})
    with pytest.raises(TypeError, match="metrics should be a dict"):
        s.step([1.0])


def test_registry_names_a_bad_keyword():
    with pytest.raises(TypeError, match="stepsize"):
        PARAM_SCHEDULERS.build(dict(type="StepLR", stepsize=2), default_args=dict(optimizer=sgd()))


def test_generic_schedulers_take_param_name():
    opt = sgd(momentum=0.9)
    s = CosineAnnealingParamScheduler(opt, "momentum", T_max=4, eta_min=0.5)
    got = lrs(opt, [s], 5, key="momentum")
    close(got, [0.5 + 0.4 * (1 + math.cos(math.pi * t / 4)) / 2 for t in range(5)])
    c = ConstantParamScheduler(opt, "lr", factor=0.5, end=2)
    assert c.param_name == "lr" and opt.param_groups[0]["lr"] == pytest.approx(0.05)


# ---------------------------------------------------------------- fastopt fused optimizers


def _train(make_opt, make_scheds, steps: int = 20) -> tuple[torch.Tensor, list[float]]:
    torch.manual_seed(0)
    grads = [torch.randn(5) for _ in range(steps)]
    p = torch.nn.Parameter(torch.linspace(-1, 1, 5))
    opt = make_opt([p])
    scheds = make_scheds(opt)
    used = []
    for g in grads:
        p.grad = g.clone()
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        for s in scheds:
            s.step()
    return p.detach(), used


def _warmup_cosine_and_momentum(opt):
    return [
        LinearLR(opt, start_factor=0.1, begin=0, end=5, by_epoch=False),
        CosineAnnealingLR(opt, begin=5, end=20, by_epoch=False),
        PARAM_SCHEDULERS.build(
            dict(type="CosineAnnealingMomentum", eta_min=0.5, by_epoch=False, end=20),
            default_args=dict(optimizer=opt),
        ),
    ]


@pytest.mark.parametrize(
    "fused_name, make_torch, kwargs",
    [
        ("FusedSGD", torch.optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-4)),
        ("FusedAdamW", torch.optim.AdamW, dict(lr=0.1, betas=(0.9, 0.999), weight_decay=0.01)),
    ],
)
def test_fused_optimizer_follows_the_schedule_like_torch(fused_name, make_torch, kwargs):
    import fastopt.optim

    fused_cls = getattr(fastopt.optim, fused_name)
    fused_p, fused_used = _train(lambda ps: fused_cls(ps, **kwargs), _warmup_cosine_and_momentum)
    torch_p, torch_used = _train(lambda ps: make_torch(ps, **kwargs), _warmup_cosine_and_momentum)
    close(fused_used, GOLDEN_WARMUP_COSINE)
    assert fused_used == torch_used
    torch.testing.assert_close(fused_p, torch_p, rtol=1e-5, atol=1e-6)


def test_seed_cyclic_cosine_chain_up_then_down():
    """The mmdet3d 'cyclic' recipe from the docs: cosine up to 10x lr, then down to 1e-4 lr."""
    lr, length = 0.001, 4
    opt = sgd(lr)
    cfg = [
        dict(type="CosineAnnealingLR", T_max=8, eta_min=lr * 10, begin=0, end=8, by_epoch=True,
             convert_to_iter_based=True),
        dict(type="CosineAnnealingLR", T_max=12, eta_min=lr * 1e-4, begin=8, end=20,
             by_epoch=True, convert_to_iter_based=True),
    ]  # fmt: skip
    scheds = build_param_schedulers(cfg, opt, epoch_length=length, max_epochs=20, max_iters=80)
    got = lrs(opt, scheds, 84)
    up = [lr * 10 + (lr - lr * 10) * (1 + math.cos(math.pi * t / 32)) / 2 for t in range(32)]
    top, low = up[-1], lr * 1e-4
    down = [low + (top - low) * (1 + math.cos(math.pi * u / 48)) / 2 for u in range(48)]
    close(got, up + down + [down[-1]] * 4)
    assert max(got) == pytest.approx(lr * 10, rel=1e-2)


# ----------------------------------------------------- MMEngine behaviours (issue 20, §4)
ORDER_DOC = "how-to-adjust-learning-rate"


@contextlib.contextmanager
def order_warning_raises() -> Iterator[None]:
    """The step-order warning is an error inside (overriding this module's ignore mark)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Detected call of")
        yield


def test_scheduler_step_before_optimizer_step_warns():
    opt = sgd()
    s = StepLR(opt, step_size=1)
    with pytest.warns(UserWarning, match=f"before `optimizer.step\\(\\)`.*{ORDER_DOC}"):
        s.step()
    opt.step()
    with order_warning_raises():
        s.step()  # checked once, at the first step after the constructor's


@pytest.mark.parametrize("wrap", [False, True], ids=["optimizer", "optim_wrapper"])
def test_optimizer_step_then_scheduler_step_is_silent(wrap):
    from fastopt.optim import FusedSGD
    from fastopt.wrapper import OptimWrapper

    for make in (
        lambda ps: torch.optim.SGD(ps, lr=BASE, momentum=0.9),
        lambda ps: FusedSGD(ps, lr=BASE, momentum=0.9),  # the fused step is counted too
    ):
        param = torch.nn.Parameter(torch.ones(3))
        opt = make([param])
        target = OptimWrapper(opt) if wrap else opt
        s = LinearLR(target, start_factor=0.5, by_epoch=False, end=4)
        with order_warning_raises():
            for _ in range(3):
                loss = (param * param).sum()
                if wrap:
                    target.update_params(loss)
                else:
                    loss.backward()
                    opt.step()
                s.step()


def test_step_replaced_on_the_instance_is_not_counted_and_warns():
    opt = sgd()
    s = ExponentialLR(opt, gamma=0.9)
    opt.step = lambda: None  # MMEngine warns in this case too
    opt.step()
    with pytest.warns(UserWarning, match=ORDER_DOC):
        s.step()


def test_gradient_accumulation_in_a_runner_does_not_warn(tmp_path):
    """Schedulers step per iteration; with accumulation the first iterations have no
    optimizer step on purpose (MMEngine warns falsely there)."""
    import runner_toys as toys

    from fastopt.runner import Runner

    runner = Runner(
        **toys.make_cfg(
            tmp_path,
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.1), accumulative_counts=2),
            param_scheduler=dict(type="LinearLR", start_factor=0.5, by_epoch=False, end=4),
            default_hooks=dict(checkpoint=None),
        )
    )
    with order_warning_raises():
        runner.train()


def test_bad_optimizer_message_uses_mmengine_wording():
    for make in (lambda: StepLR("sgd", step_size=1), lambda: ReduceOnPlateauLR("sgd")):
        with pytest.raises(TypeError, match="should be an Optimizer.*but got str"):
            make()


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda opt: MultiStepLR(opt, milestones="36"), "milestones should be a list of numbers"),
        (lambda opt: MultiStepLR(opt, milestones=3), "milestones should be a list of numbers"),
        (
            lambda opt: CosineRestartLR(opt, periods=4, eta_min=0),
            "periods should be a list of numbers",
        ),
    ],
)
def test_list_arguments_refuse_a_str_or_a_lone_number(make, match):
    with pytest.raises(TypeError, match=match):
        make(sgd())


def test_reduce_on_plateau_by_iteration_counts_iterations_and_judges_validations():
    opt = sgd()
    s = ReduceOnPlateauLR(opt, patience=0, factor=0.5, by_epoch=False, begin=4, end=10)
    seen = []
    for it in range(12):
        s.step()  # after every iteration: only counts
        if (it + 1) % 2 == 0:  # a validation every 2 iterations, never improving after the first
            s.step({"loss": 1.0})
            seen.append(opt.param_groups[0]["lr"])
    # after iteration 2: before begin=4 (counted in iterations); 4: the first judged value
    # (the best); 6 and 8: no improvement -> cut each time; 10 and 12: from end=10 on
    assert seen == pytest.approx([BASE, BASE, 0.05, 0.025, 0.025, 0.025])


def test_reduce_on_plateau_converts_to_iterations():
    (s,) = build_param_schedulers(
        [dict(type="ReduceOnPlateauLR", begin=1, end=3, convert_to_iter_based=True)],
        sgd(),
        epoch_length=5,
    )
    assert (s.by_epoch, s.begin, s.end) == (False, 5, 15)
