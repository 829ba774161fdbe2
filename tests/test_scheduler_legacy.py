"""MMCV 1.x ``lr_config`` / ``momentum_config``: same values as MMCV's updater hooks.

The oracle below re-enacts MMCV 1.7's ``LrUpdaterHook`` / ``MomentumUpdaterHook`` control
flow -- state kept between ``before_run``, ``before_train_epoch`` and ``before_train_iter``,
values written into the groups -- on a fake runner, so the closed-form legacy schedulers
are checked against the hook-driven behaviour, warm-ups and MMCV's quirks included.
"""

from __future__ import annotations

import itertools
from math import cos, pi

import pytest
import torch

from fastopt.registry import PARAM_SCHEDULERS
from fastopt.scheduler import (
    LegacyLRScheduler,
    LegacyMomentumScheduler,
    build_param_schedulers,
    translate_legacy_schedules,
)

# These tests drive schedulers alone, with no optimizer step in between: the warning about
# calling scheduler.step() before optimizer.step() is expected here (it has its own tests).
pytestmark = pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")

EPOCHS, EPOCH_LEN = 4, 5


def anneal_cos(start, end, factor, weight=1.0):
    return end + 0.5 * weight * (start - end) * (cos(pi * factor) + 1)


def anneal_linear(start, end, factor):
    return start + (end - start) * factor


ANNEAL = {"cos": anneal_cos, "linear": anneal_linear}


class FakeRunner:
    def __init__(self, optimizer, epochs=EPOCHS, epoch_len=EPOCH_LEN):
        self.optimizer, self.epoch, self.iter = optimizer, 0, 0
        self.max_epochs, self.max_iters = epochs, epochs * epoch_len
        self.data_loader = range(epoch_len)


class RefUpdater:
    """MMCV 1.7's updater-hook control flow for one policy (lr or momentum)."""

    def __init__(self, kind, policy, by_epoch=True, warmup=None, warmup_iters=0,
                 warmup_ratio=None, warmup_by_epoch=False, **kw):  # fmt: skip
        self.kind, self.policy, self.kw = kind, policy, kw
        self.by_epoch = False if policy in ("Cyclic", "OneCycle") else by_epoch
        self.warmup, self.warmup_ratio = warmup, warmup_ratio or (0.1 if kind == "lr" else 0.9)
        self.warmup_iters = None if warmup_by_epoch else warmup_iters
        self.warmup_epochs = warmup_iters if warmup_by_epoch else None
        self.regular, self.regular_momentum = [], []  # MMCV never fills regular_momentum

    # -- groups
    def _set(self, runner, values):
        for group, v in zip(runner.optimizer.param_groups, values):
            if self.kind == "lr":
                group["lr"] = v
            elif "momentum" in group:
                group["momentum"] = v
            else:
                group["betas"] = (v, group["betas"][1])

    def before_run(self, runner):
        groups = runner.optimizer.param_groups
        kw = self.kw
        if self.policy == "OneCycle" and self.kind == "lr":
            self.base = [kw["max_lr"] / kw.get("div_factor", 25)] * len(groups)
            total = kw.get("total_steps") or runner.max_iters
            pct, div, final = (
                kw.get("pct_start", 0.3),
                kw.get("div_factor", 25),
                kw.get("final_div_factor", 1e4),
            )
            if kw.get("three_phase"):
                self.phases = [
                    [float(pct * total) - 1, 1, div],
                    [float(2 * pct * total) - 2, div, 1],
                    [total - 1, 1, 1 / final],
                ]
            else:
                self.phases = [[float(pct * total) - 1, 1, div], [total - 1, div, 1 / final]]
            return
        if self.policy == "OneCycle":
            for g in groups:
                top = kw.get("max_momentum", 0.95)
                if "momentum" in g:
                    g["momentum"] = top
                else:
                    g["betas"] = (top, g["betas"][1])
                g["base_m"], g["max_m"] = kw.get("base_momentum", 0.85), top
            pct, m = kw.get("pct_start", 0.3), runner.max_iters
            if kw.get("three_phase"):
                self.phases = [
                    (float(pct * m) - 1, "max_m", "base_m"),
                    (float(2 * pct * m) - 2, "base_m", "max_m"),
                    (m - 1, "max_m", "max_m"),
                ]
            else:
                self.phases = [(float(pct * m) - 1, "max_m", "base_m"), (m - 1, "base_m", "max_m")]
            return
        for g in groups:
            if self.kind == "lr":
                g.setdefault("initial_lr", g["lr"])
            else:
                g.setdefault(
                    "initial_momentum", g["momentum"] if "momentum" in g else g["betas"][0]
                )
        self.base = [g[f"initial_{self.kind}"] for g in groups]
        if self.policy == "Cyclic":
            self.per_phase = runner.max_iters // kw.get("cyclic_times", 1)
            up = int(kw.get("step_ratio_up", 0.4) * self.per_phase)
            r = kw.get("target_ratio", (10, 1e-4) if self.kind == "lr" else (0.85 / 0.95, 1))
            self.phases = [[0, up, 1, r[0]], [up, self.per_phase, r[0], r[1]]]

    def get(self, runner, base, group):
        kw, p = self.kw, (runner.epoch if self.by_epoch else runner.iter)
        m = runner.max_epochs if self.by_epoch else runner.max_iters
        mn = kw.get(f"min_{self.kind}")
        ratio = kw.get(f"min_{self.kind}_ratio")
        target = base * ratio if ratio is not None else mn
        if self.policy == "Fixed":
            return base
        if self.policy == "Step":
            step = kw["step"]
            exp = (
                p // step
                if isinstance(step, int)
                else next((i for i, s in enumerate(step) if p < s), len(step))
            )
            v = base * kw.get("gamma", 0.1 if self.kind == "lr" else 0.5) ** exp
            return v if mn is None else max(v, mn)
        if self.policy == "Exp":
            return base * kw["gamma"] ** p
        if self.policy == "Poly":
            return (base - kw.get("min_lr", 0.0)) * (1 - p / m) ** kw.get("power", 1.0) + kw.get(
                "min_lr", 0.0
            )
        if self.policy == "Inv":
            return base * (1 + kw["gamma"] * p) ** (-kw.get("power", 1.0))
        if self.policy == "CosineAnnealing":
            return anneal_cos(base, target, p / m)
        if self.policy == "LinearAnnealing":
            return anneal_linear(base, target, p / m)
        if self.policy == "FlatCosineAnnealing":
            start = round(m * kw.get("start_percent", 0.75))
            return base if p - start < 0 else anneal_cos(base, target, (p - start) / (m - start))
        if self.policy == "CosineRestart":
            cum = list(itertools.accumulate(kw["periods"]))
            idx = next(i for i, c in enumerate(cum) if p < c)
            restart = 0 if idx == 0 else cum[idx - 1]
            alpha = min((p - restart) / kw["periods"][idx], 1)
            return anneal_cos(base, target, alpha, kw.get("restart_weights", [1])[idx])
        if self.policy == "Cyclic":
            curr, scale = (
                runner.iter % self.per_phase,
                kw.get("gamma", 1) ** (runner.iter // self.per_phase),
            )
            for s, e, sr, er in self.phases:
                if s <= curr < e:
                    if s == 0:
                        er = 1 - scale + er * scale
                    else:
                        sr = 1 - scale + sr * scale
                    return ANNEAL[kw.get("anneal_strategy", "cos")](
                        base * sr, base * er, (curr - s) / (e - s)
                    )
        if self.policy == "OneCycle" and self.kind == "lr":
            start = 0
            for end, s, e in self.phases:
                if runner.iter <= end:
                    return ANNEAL[kw.get("anneal_strategy", "cos")](
                        base * s, base * e, (runner.iter - start) / (end - start)
                    )
                start = end
        if self.policy == "OneCycle":
            start = 0
            for i, (end, s, e) in enumerate(self.phases):
                if runner.iter <= end or i == len(self.phases) - 1:
                    return ANNEAL[kw.get("anneal_strategy", "cos")](
                        group[s], group[e], (runner.iter - start) / (end - start)
                    )
                start = end
        raise AssertionError(self.policy)

    def regular_values(self, runner):
        if self.policy == "OneCycle" and self.kind == "momentum":
            return [self.get(runner, None, g) for g in runner.optimizer.param_groups]
        return [self.get(runner, b, None) for b in self.base]

    def warm(self, cur):
        k_lin = (1 - cur / self.warmup_iters) * (1 - self.warmup_ratio)
        k_exp = self.warmup_ratio ** (1 - cur / self.warmup_iters)
        if self.kind == "lr":
            if self.warmup == "constant":
                return [v * self.warmup_ratio for v in self.regular]
            return (
                [v * (1 - k_lin) for v in self.regular]
                if self.warmup == "linear"
                else [v * k_exp for v in self.regular]
            )
        if self.warmup == "constant":
            return [v / self.warmup_ratio for v in self.regular_momentum]  # always empty
        return (
            [v / (1 - k_lin) for v in self.regular]
            if self.warmup == "linear"
            else [v / k_exp for v in self.regular]
        )

    def before_train_epoch(self, runner):
        if self.warmup_iters is None:
            self.warmup_iters = self.warmup_epochs * len(runner.data_loader)
        if self.by_epoch:
            self.regular = self.regular_values(runner)
            self._set(runner, self.regular)

    def before_train_iter(self, runner):
        cur = runner.iter
        if not self.by_epoch:
            self.regular = self.regular_values(runner)
            self._set(
                runner,
                self.regular if self.warmup is None or cur >= self.warmup_iters else self.warm(cur),
            )
        elif self.warmup is not None and cur <= self.warmup_iters:
            self._set(runner, self.regular if cur == self.warmup_iters else self.warm(cur))


def value(group, kind):
    return group[kind] if kind in group else group["betas"][0]


def mmcv_sequence(make_opt, lr_config, momentum_config):
    opt = make_opt()
    runner = FakeRunner(opt)
    hooks = []
    for kind, cfg in (("lr", lr_config), ("momentum", momentum_config)):
        if cfg is not None:
            cfg = dict(cfg)
            policy = cfg.pop("policy")
            hooks.append(
                RefUpdater(kind, policy.title() if policy == policy.lower() else policy, **cfg)
            )
    for h in hooks:
        h.before_run(runner)
    seen = []
    for epoch in range(EPOCHS):
        runner.epoch = epoch
        for h in hooks:
            h.before_train_epoch(runner)
        for _ in range(EPOCH_LEN):
            for h in hooks:
                h.before_train_iter(runner)
            seen.append([(value(g, "lr"), value(g, "momentum")) for g in opt.param_groups])
            runner.iter += 1
    return seen


def fastopt_sequence(make_opt, lr_config, momentum_config):
    opt = make_opt()
    entries = translate_legacy_schedules(lr_config, momentum_config)
    scheds = build_param_schedulers(
        entries, opt, epoch_length=EPOCH_LEN, max_epochs=EPOCHS, max_iters=EPOCHS * EPOCH_LEN
    )
    seen = []
    for _ in range(EPOCHS):
        for _ in range(EPOCH_LEN):
            seen.append([(value(g, "lr"), value(g, "momentum")) for g in opt.param_groups])
            for s in scheds:
                if not s.by_epoch:
                    s.step()
        for s in scheds:
            if s.by_epoch:
                s.step()
    return seen


def flat(seq):
    return [v for row in seq for pair in row for v in pair]


def sgd():
    return torch.optim.SGD(
        [{"params": [torch.nn.Parameter(torch.zeros(1))]},
         {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.004, "momentum": 0.8}],
        lr=0.01, momentum=0.95,
    )  # fmt: skip


def adam():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.01, betas=(0.95, 0.999))


LR_POLICIES = [
    dict(policy="fixed"),
    dict(policy="step", step=2, gamma=0.5),
    dict(policy="step", step=[1, 3], min_lr=0.0005),
    dict(policy="exp", gamma=0.8),
    dict(policy="poly", power=0.9, min_lr=1e-4),
    dict(policy="inv", gamma=0.1, power=0.75),
    dict(policy="CosineAnnealing", min_lr=1e-4),
    dict(policy="CosineAnnealing", min_lr_ratio=1e-3),
    dict(policy="FlatCosineAnnealing", start_percent=0.5, min_lr_ratio=0.01),
    dict(policy="CosineRestart", periods=[2, 2], restart_weights=[1, 0.5], min_lr=1e-5),
    dict(policy="LinearAnnealing", min_lr_ratio=0.05),
]
ITER_ONLY = [
    dict(policy="cyclic"),
    dict(
        policy="cyclic",
        target_ratio=(5, 0.1),
        cyclic_times=2,
        step_ratio_up=0.3,
        gamma=0.5,
        anneal_strategy="linear",
    ),
    dict(policy="OneCycle", max_lr=0.05),
    dict(
        policy="OneCycle", max_lr=0.05, total_steps=25, three_phase=True, anneal_strategy="linear"
    ),
]
WARMUPS = [
    dict(),
    dict(warmup="constant", warmup_iters=7, warmup_ratio=0.2),
    dict(warmup="linear", warmup_iters=7),
    dict(warmup="exp", warmup_iters=3, warmup_ratio=0.01),
    dict(warmup="linear", warmup_iters=1, warmup_by_epoch=True, warmup_ratio=0.001),
]


def lr_cases():
    for policy, by_epoch, warm in itertools.product(LR_POLICIES, [True, False], WARMUPS):
        if policy["policy"] == "CosineRestart" and not by_epoch:
            policy = dict(policy, periods=[12, 8])
        yield dict(policy, by_epoch=by_epoch, **warm)
    for policy, warm in itertools.product(ITER_ONLY, WARMUPS[:3]):
        yield dict(policy, **warm)


@pytest.mark.parametrize("lr_config", list(lr_cases()), ids=str)
def test_lr_policy_matches_mmcv(lr_config):
    expected = flat(mmcv_sequence(sgd, lr_config, None))
    got = flat(fastopt_sequence(sgd, lr_config, None))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


MOMENTUM_POLICIES = [
    dict(policy="step", step=[2], gamma=0.9),
    dict(policy="step", step=1, min_momentum=0.7),
    dict(policy="CosineAnnealing", min_momentum_ratio=0.8),
    dict(policy="LinearAnnealing", min_momentum=0.85),
    dict(policy="cyclic", by_epoch=False),
    dict(policy="cyclic", target_ratio=(0.8, 1.0), cyclic_times=2, gamma=0.5, by_epoch=False),
    dict(policy="OneCycle", three_phase=False),
    dict(policy="OneCycle", three_phase=True, anneal_strategy="linear", base_momentum=0.8),
]
MOMENTUM_WARMUPS = [dict(), dict(warmup="constant", warmup_iters=7), dict(warmup="linear", warmup_iters=7),
                    dict(warmup="exp", warmup_iters=4, warmup_ratio=0.8)]  # fmt: skip


def momentum_cases():
    for policy, by_epoch, warm in itertools.product(
        MOMENTUM_POLICIES, [True, False], MOMENTUM_WARMUPS
    ):
        if policy["policy"] in ("cyclic", "OneCycle"):
            if by_epoch:
                continue
            yield dict(policy, **warm)
        else:
            yield dict(policy, by_epoch=by_epoch, **warm)


@pytest.mark.parametrize("make", [sgd, adam], ids=["sgd", "adam"])
@pytest.mark.parametrize("momentum_config", list(momentum_cases()), ids=str)
def test_momentum_policy_matches_mmcv(momentum_config, make):
    lr_config = dict(policy="step", step=[2], warmup="linear", warmup_iters=3)
    expected = flat(mmcv_sequence(make, lr_config, momentum_config))
    got = flat(fastopt_sequence(make, lr_config, momentum_config))
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_constant_momentum_warmup_changes_nothing_like_mmcv():
    cfg = dict(
        policy="CosineAnnealing",
        min_momentum=0.5,
        by_epoch=False,
        warmup="constant",
        warmup_iters=6,
    )
    seq = [row[0][1] for row in fastopt_sequence(sgd, None, cfg)]
    assert seq[:6] == [0.95] * 6  # held at the optimizer's value during the warm-up
    assert seq[6] == pytest.approx(anneal_cos(0.95, 0.5, 6 / 20))


# ---------------------------------------------------------------- goldens (MMCV 1.7.2, g7)

GOLDEN_POLY_HEAD = [
    0.001,
    0.0026749423,
    0.0041880114,
    0.0055378413,
    0.0067229473,
    0.0077417061,
    0.0072816367,
]


def test_golden_poly_linear_warmup():
    cfg = dict(
        policy="poly",
        power=0.9,
        min_lr=1e-4,
        by_epoch=False,
        warmup="linear",
        warmup_iters=5,
        warmup_ratio=0.1,
    )
    seq = [
        row[0][0]
        for row in fastopt_sequence(
            lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01), cfg, None
        )
    ]
    assert seq[:7] == pytest.approx(GOLDEN_POLY_HEAD, abs=1e-10)
    assert seq[-1] == pytest.approx(0.000767895, abs=1e-9)


def test_golden_cosine_by_epoch_warmup_spans_epochs():
    cfg = dict(
        policy="CosineAnnealing",
        min_lr_ratio=1e-3,
        by_epoch=True,
        warmup="linear",
        warmup_iters=6,
        warmup_ratio=1e-3,
    )
    seq = [
        row[0][0]
        for row in fastopt_sequence(
            lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01), cfg, None
        )
    ]
    assert seq[:5] == pytest.approx([1e-05, 0.001675, 0.00334, 0.005005, 0.00667], abs=1e-12)
    assert seq[5] == pytest.approx(0.0071155881, abs=1e-10)  # warm-up of epoch 1's regular lr
    assert seq[6:10] == pytest.approx([0.0085369984] * 4, abs=1e-10)
    assert seq[10:15] == pytest.approx([0.005005] * 5, abs=1e-12)
    assert seq[15:] == pytest.approx([0.0014730016] * 5, abs=1e-10)


def test_golden_cyclic_lr_and_momentum_peak_together():
    lr_cfg = dict(policy="cyclic", target_ratio=(10, 1e-4), cyclic_times=1, step_ratio_up=0.4)
    mom_cfg = dict(
        policy="cyclic", target_ratio=(0.85 / 0.95, 1), cyclic_times=1, step_ratio_up=0.4
    )
    make = lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.001, momentum=0.95)  # noqa: E731
    rows = [row[0] for row in fastopt_sequence(make, lr_cfg, mom_cfg)]
    lrs, moms = [r[0] for r in rows], [r[1] for r in rows]
    assert max(lrs) == pytest.approx(0.01) and lrs.index(max(lrs)) == 8
    assert min(moms) == pytest.approx(0.85) and moms.index(min(moms)) == 8


# ---------------------------------------------------------------- translation contract


def test_translation_entries():
    lr = dict(policy="step", step=[8, 11], warmup="linear", warmup_iters=500, warmup_ratio=0.001)
    mom = dict(policy="cyclic", target_ratio=(0.85 / 0.95, 1))
    entries = translate_legacy_schedules(lr, mom)
    assert entries == [
        dict(type="LegacyLRScheduler", policy="Step", step=[8, 11], policy_by_epoch=True, warmup="linear",
             warmup_iters=500, warmup_ratio=0.001, by_epoch=True, convert_to_iter_based=True),
        dict(type="LegacyMomentumScheduler", policy="Cyclic", target_ratio=(0.85 / 0.95, 1),
             policy_by_epoch=False, by_epoch=False),
    ]  # fmt: skip
    assert lr["policy"] == "step" and "by_epoch" not in lr  # inputs untouched
    assert translate_legacy_schedules(None, None) == []
    iter_warm_epochs = translate_legacy_schedules(
        dict(policy="poly", by_epoch=False, warmup="exp", warmup_iters=1, warmup_by_epoch=True),
        None,
    )[0]
    assert iter_warm_epochs["by_epoch"] and iter_warm_epochs["convert_to_iter_based"]


def test_translated_entries_build_without_the_runner_helper():
    """What a runner does by hand: set end, build with optimizer and epoch_length."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    (entry,) = translate_legacy_schedules(dict(policy="step", step=[2]), None)
    entry = dict(entry, end=3)  # max_epochs
    s = PARAM_SCHEDULERS.build(entry, default_args=dict(optimizer=opt, epoch_length=10))
    assert isinstance(s, LegacyLRScheduler)
    assert (s.by_epoch, s.end, s.epoch_length) == (False, 30, 10)


@pytest.mark.parametrize(
    "lr_config, error, match",
    [
        (dict(step=[1]), ValueError, "needs a 'policy'"),
        (
            dict(policy="cosine_annealing"),
            ValueError,
            "unknown policy 'cosine_annealing'.*'CosineAnnealing'",
        ),
        (dict(policy="onecycle", max_lr=1), ValueError, "Did you mean 'OneCycle'"),
        (dict(policy="step"), TypeError, "needs step"),
        (dict(policy="step", step=[2], gama=0.5), TypeError, "unexpected keyword 'gama'.*gamma"),
        (dict(policy="step", step=0), ValueError, "positive int"),
        (dict(policy="CosineAnnealing"), ValueError, "exactly one of min_lr and min_lr_ratio"),
        (dict(policy="CosineAnnealing", min_lr=0, min_lr_ratio=0.1), ValueError, "exactly one"),
        (
            dict(policy="poly", warmup="cosine", warmup_iters=5),
            ValueError,
            "not a supported type for warming up",
        ),
        (dict(policy="poly", warmup="linear", warmup_iters=0), ValueError, "warmup_iters"),
        (
            dict(policy="poly", warmup="linear", warmup_iters=5, warmup_ratio=0),
            ValueError,
            "warmup_ratio",
        ),
        (dict(policy="cyclic", by_epoch=True), ValueError, "only supports by_epoch=False"),
        (dict(policy="cyclic", target_ratio="x"), ValueError, "target_ratio"),
        (dict(policy="cyclic", step_ratio_up=1.0), ValueError, "step_ratio_up"),
        (
            dict(policy="CosineRestart", periods=[1, 2], restart_weights=[1], min_lr=0),
            ValueError,
            "same length",
        ),
        (
            dict(policy="FlatCosineAnnealing", start_percent=1.5, min_lr=0),
            ValueError,
            "start_percent",
        ),
        (dict(policy="OneCycle", max_lr=1, pct_start=2.0), ValueError, "pct_start"),
        ("step", TypeError, "should be a dict"),
    ],
)
def test_translation_errors_name_the_config(lr_config, error, match):
    with pytest.raises(error, match=match):
        translate_legacy_schedules(lr_config, None)


def test_momentum_config_errors():
    with pytest.raises(ValueError, match="unknown policy 'poly'"):
        translate_legacy_schedules(None, dict(policy="poly"))
    with pytest.raises(TypeError, match="momentum_config.*'min_lr'"):
        translate_legacy_schedules(None, dict(policy="CosineAnnealing", min_lr=0.1))


def test_scheduler_errors_at_build():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="needs the run length"):
        LegacyLRScheduler(opt, policy="poly", policy_by_epoch=False, by_epoch=False)
    with pytest.raises(ValueError, match="convert_to_iter_based=True"):
        LegacyLRScheduler(opt, policy="step", step=2, by_epoch=False, end=10)
    with pytest.raises(ValueError, match="only suits an epoch policy without warm-up"):
        LegacyLRScheduler(opt, policy="step", step=2, warmup="linear", warmup_iters=3, end=10)
    with pytest.raises(ValueError, match="total_steps is 5"):
        LegacyLRScheduler(opt, policy="OneCycle", max_lr=1.0, total_steps=5, by_epoch=False, end=10)
    with pytest.raises(ValueError, match="cyclic_times=5 is more than the 3 iterations"):
        LegacyLRScheduler(opt, policy="cyclic", cyclic_times=5, by_epoch=False, end=3)
    with pytest.raises(ValueError, match="neither 'momentum' nor 'betas'"):
        LegacyMomentumScheduler(
            torch.optim.Adagrad([torch.nn.Parameter(torch.zeros(1))]), policy="step", step=1
        )


def test_epoch_stepped_legacy_scheduler_matches_iteration_stepped():
    """``by_epoch=True`` without conversion: stepped per epoch, same per-epoch values."""
    make = lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)  # noqa: E731
    opt = make()
    s = LegacyLRScheduler(opt, policy="poly", power=2.0, end=EPOCHS)
    per_epoch = []
    for _ in range(EPOCHS):
        per_epoch.append(opt.param_groups[0]["lr"])
        s.step()
    reference = fastopt_sequence(make, dict(policy="poly", power=2.0), None)
    assert per_epoch == pytest.approx([reference[e * EPOCH_LEN][0][0] for e in range(EPOCHS)])


def test_legacy_resume_and_weights_only_state(tmp_path):
    make = lambda: torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)  # noqa: E731
    entries = translate_legacy_schedules(
        dict(policy="OneCycle", max_lr=0.5), dict(policy="OneCycle", three_phase=True)
    )
    kw = dict(epoch_length=5, max_epochs=4, max_iters=20)
    opt = make()
    full = []
    for s_list in [build_param_schedulers(entries, opt, **kw)]:
        for _ in range(20):
            full += [opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]]
            for s in s_list:
                s.step()
    opt = make()
    scheds = build_param_schedulers(entries, opt, **kw)
    head = []
    for _ in range(8):
        head += [opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]]
        for s in scheds:
            s.step()
    torch.save({"opt": opt.state_dict(), "s": [s.state_dict() for s in scheds]}, tmp_path / "c.pth")
    ckpt = torch.load(tmp_path / "c.pth", weights_only=True)
    opt = make()
    scheds = build_param_schedulers(entries, opt, **kw)
    opt.load_state_dict(ckpt["opt"])
    for s, state in zip(scheds, ckpt["s"]):
        s.load_state_dict(state)
    tail = []
    for _ in range(12):
        tail += [opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]]
        for s in scheds:
            s.step()
    assert head + tail == pytest.approx(full, rel=1e-12)
