"""Precision modes of 16-bit params: fp32 master weights, stochastic rounding, Kahan compensation.

Each mode is a property of the param's load and store (csrc/core/precision.h), so every optimizer
of the catalog gets it; the tests check each against a reference written out in torch from the
mode's rule, and the engines (CPU, emulated CUDA) against each other bit for bit.
"""

from __future__ import annotations

import copy
import math
import os

import dist_run
import pytest
import torch
from optim_reference import engine

import fastopt
import fastopt._ext
from fastopt import _C as CPU
from fastopt.catalog import CATALOG

BF16 = torch.bfloat16
SHAPES = [(0,), (1,), (7, 3), (4099,), ((1 << 16) + 37,)]  # one more than a chunk, odd tails
FIRST_CASE = {o.name: next(iter(o.cases.values())) for o in CATALOG}
MODES = [
    dict(master_weights=True),
    dict(kahan_summation=True),
    dict(bf16_rounding="stochastic", rounding_seed=7),
]
MODE_IDS = ["master", "kahan", "stochastic"]


def _params(dtype=BF16, shapes=SHAPES, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def _grads(step, params):
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]


def _run(opt, params, steps, first=0):
    for step in range(first, first + steps):
        for p, g in zip(params, _grads(step, params)):
            p.grad = g
        opt.step()
    return [p.detach().clone() for p in params]


# --- the generator ------------------------------------------------------------------------------
def test_philox_known_answers():
    # Random123's known-answer vectors of philox4x32_10
    assert CPU.philox4x32_10([0, 0, 0, 0], [0, 0]) == [
        0x6627E8D5,
        0xE169C58D,
        0xBC57AC4C,
        0x9B00DBD8,
    ]
    assert CPU.philox4x32_10([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2) == [
        0x408F276D,
        0x41C83B0E,
        0xA20BC7C6,
        0x6D5451FD,
    ]
    pi = [0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344]
    assert CPU.philox4x32_10(pi, [0xA4093822, 0x299F31D0]) == [
        0xD16CFE09,
        0x94FDCCEB,
        0x5001E420,
        0x24126EA1,
    ]


# --- master weights -----------------------------------------------------------------------------
@pytest.mark.parametrize("name", [o.name for o in CATALOG])
def test_master_weights_update_the_fp32_copy_as_an_fp32_param_would(name):
    """The master copy follows the update of a float32 param fed the same (16-bit) grads, and the
    param is its nearest rounding, for every optimizer of the catalog."""
    cls = getattr(fastopt, name)
    kw = FIRST_CASE[name]
    params = _params()
    ref = [torch.nn.Parameter(p.detach().float()) for p in params]
    opt = cls(params, **kw, master_weights=True)
    ref_opt = cls(ref, **kw)
    for step in range(4):
        for p, r, g in zip(params, ref, _grads(step, params)):
            p.grad, r.grad = g, g.float()
        opt.step()
        ref_opt.step()
    for p, r in zip(params, ref):
        master = opt.state[p]["master_param"]
        assert master.dtype == torch.float32
        # the reduction pass of LAMB reads the 16-bit param for its direction's weight decay
        # term, so its trust ratio differs in the last bits
        tol = dict(rtol=2e-6, atol=1e-7) if name == "FusedLAMB" else dict(rtol=0, atol=0)
        torch.testing.assert_close(master, r.detach(), **tol)
        assert torch.equal(p.detach(), master.to(BF16))


def test_master_weights_for_float16_and_not_for_float32_params():
    half, single = _params(torch.float16, [(300,)]), _params(torch.float32, [(5,)], seed=1)
    opt = fastopt.FusedAdamW([*half, *single], lr=1e-2, master_weights=True)
    _run(opt, [*half, *single], 3)
    assert "master_param" not in opt.state[single[0]]
    master = opt.state[half[0]]["master_param"]
    assert master.dtype == torch.float32 and torch.equal(half[0].detach(), master.half())


def test_master_weights_keep_updates_a_bf16_param_loses():
    p = torch.nn.Parameter(torch.ones(64, dtype=BF16))
    plain = torch.nn.Parameter(torch.ones(64, dtype=BF16))
    opt = fastopt.FusedSGD([p], lr=1.0, master_weights=True)
    opt_plain = fastopt.FusedSGD([plain], lr=1.0)
    for _ in range(100):  # 100 steps of 2**-12: each below half an ulp of 1.0
        p.grad = torch.full_like(p, 2**-12)
        plain.grad = torch.full_like(plain, 2**-12)
        opt.step()
        opt_plain.step()
    assert torch.equal(plain.detach(), torch.ones_like(plain))
    expected = 1.0 - 100 * 2**-12
    assert torch.allclose(opt.state[p]["master_param"], torch.full((64,), expected), atol=1e-7)
    assert torch.equal(p.detach(), torch.full((64,), expected).to(BF16))


def test_master_weights_through_the_gradient_pipeline():
    """Unscaling and clipping read the grads as the update does; a step skipped for an inf grad
    leaves master and param untouched."""
    params = _params(shapes=[(50,), (30, 3)])
    ref = [torch.nn.Parameter(p.detach().float()) for p in params]
    opt = fastopt.FusedAdamW(params, lr=1e-2, master_weights=True)
    ref_opt = fastopt.FusedAdamW(ref, lr=1e-2)
    scale = torch.tensor(8.0)
    for step in range(3):
        for p, r, g in zip(params, ref, _grads(step, params)):
            p.grad = g * 8
            r.grad = (g * 8).float()
        opt.fused_step(max_norm=1.0, loss_scale=scale)
        ref_opt.fused_step(max_norm=1.0, loss_scale=scale)
    for p, r in zip(params, ref):
        assert torch.equal(opt.state[p]["master_param"], r.detach())
    before = {k: v.clone() for k, v in opt.state[params[0]].items()}
    param_before = params[0].detach().clone()
    params[0].grad[3] = float("inf")
    found = torch.zeros(())
    opt.fused_step(max_norm=1.0, loss_scale=scale, found_inf=found)
    assert found.item() == 1.0
    assert torch.equal(params[0].detach(), param_before)
    assert torch.equal(opt.state[params[0]]["master_param"], before["master_param"])


@pytest.mark.parametrize("state_dtype", [torch.float32, "param"])
def test_master_weights_survive_state_dict_round_trip(state_dtype):
    params = _params(shapes=[(40,), (9, 4)])
    opt = fastopt.FusedAdamW(params, lr=1e-2, master_weights=True, state_dtype=state_dtype)
    _run(opt, params, 3)
    saved = copy.deepcopy(opt.state_dict())
    snapshot = [p.detach().clone() for p in params]
    expected = _run(opt, params, 3, first=3)

    params2 = [torch.nn.Parameter(s) for s in snapshot]
    opt2 = fastopt.FusedAdamW(params2, lr=1e-2, master_weights=True, state_dtype=state_dtype)
    opt2.load_state_dict(saved)
    for p2 in params2:  # torch's load casts states to the param's dtype: masters stay float32
        assert opt2.state[p2]["master_param"].dtype == torch.float32
    got = _run(opt2, params2, 3, first=3)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_checkpoint_without_masters_creates_them_from_the_params():
    params = _params(shapes=[(40,)])
    plain = fastopt.FusedAdamW(params, lr=1e-2)
    _run(plain, params, 2)
    opt = fastopt.FusedAdamW(params, lr=1e-2, master_weights=True)
    opt.load_state_dict(plain.state_dict())
    assert "master_param" not in opt.state[params[0]]
    start = params[0].detach().float()
    ref = torch.nn.Parameter(start.clone())
    ref_opt = fastopt.FusedAdamW([ref], lr=1e-2)
    ref_opt.load_state_dict(plain.state_dict())
    _run(opt, params, 1, first=2)
    ref.grad = _grads(2, params)[0].float()
    ref_opt.step()
    assert torch.equal(opt.state[params[0]]["master_param"], ref.detach())


def test_masters_of_a_checkpoint_are_dropped_by_an_optimizer_without_them():
    params = _params(shapes=[(40,)])
    opt = fastopt.FusedAdamW(params, lr=1e-2, master_weights=True)
    _run(opt, params, 2)
    plain = fastopt.FusedAdamW(params, lr=1e-2)
    plain.load_state_dict(opt.state_dict())
    assert "master_param" not in plain.state[params[0]]
    _run(plain, params, 1, first=2)


# --- stochastic rounding -------------------------------------------------------------------------
def _neighbours(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The bfloat16 values just below and above (in magnitude) each float32 value."""
    bits = x.view(torch.int32)
    low = (bits & ~0xFFFF).view(torch.float32)
    high = ((bits & ~0xFFFF) + 0x10000).view(torch.float32)
    return low, high


def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour():
    """One SGD step p - lr * g with exact float32 result x: each element becomes one of the two
    bfloat16 neighbours of x, the upper one (in magnitude) with probability q = dropped / 2^16,
    so E[result - x] = 0. The mean error over n elements has standard deviation
    sqrt(sum_i ulp_i^2 q_i (1 - q_i)) / n; the test allows 6 of them."""
    n = 1 << 18
    g = torch.Generator().manual_seed(5)
    p = torch.nn.Parameter(torch.randn(n, generator=g).to(BF16))
    grad = torch.randn(n, generator=g).to(BF16)
    lr = 2**-10  # updates well below an ulp of most weights
    x = p.detach().float() - lr * grad.float()  # exact in float32: no rounding before the store
    opt = fastopt.FusedSGD([p], lr=lr, bf16_rounding="stochastic", rounding_seed=11)
    p.grad = grad
    opt.step()
    got = p.detach().float()
    low, high = _neighbours(x)
    exact = low == x
    assert torch.all((got == low) | (got == high) & ~exact), "a value that is not a neighbour"
    assert torch.equal(got[exact], x[exact])
    ulp = high - low
    q = (x - low) / ulp
    sigma = torch.sqrt((ulp.double() ** 2 * q * (1 - q)).sum()) / n
    mean_error = (got.double() - x.double()).mean()
    assert abs(mean_error) < 6 * sigma
    # and nearest rounding is biased on the same data (here it drops the whole update)
    assert (q[~exact] - 0.5).abs().mean() > 0.2
    up = (got == high) & ~exact
    assert abs(up.double().mean() - q[~exact].double().mean() * (~exact).double().mean()) < 0.01


def test_stochastic_rounding_moves_a_weight_by_its_expected_update():
    """Where nearest rounding never moves a weight of 1.0 by 2**-12 per step, stochastic
    rounding gets there on average: after k steps the mean is 1 - k * 2**-12 (6 sigma)."""
    n, k = 1 << 14, 64
    p = torch.nn.Parameter(torch.ones(n, dtype=BF16))
    opt = fastopt.FusedSGD([p], lr=1.0, bf16_rounding="stochastic", rounding_seed=3)
    for _ in range(k):
        p.grad = torch.full_like(p, 2**-12)
        opt.step()
    mean = p.detach().double().mean().item()
    # each step's rounding adds at most an ulp (2**-8) of variance q(1-q) <= 1/4 per element
    sigma = math.sqrt(k) * 2**-8 * 0.5 / math.sqrt(n)
    assert abs(mean - (1 - k * 2**-12)) < 6 * sigma
    assert opt.param_groups[0]["rounding_step"] == k


def test_stochastic_rounding_is_deterministic_and_thread_independent():
    runs = []
    for threads in (1, 2, 1):
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            params = _params()
            opt = fastopt.FusedAdamW(params, lr=1e-2, bf16_rounding="stochastic", rounding_seed=9)
            runs.append(_run(opt, params, 3))
        finally:
            torch.set_num_threads(saved)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)
    params = _params()
    other_seed = fastopt.FusedAdamW(params, lr=1e-2, bf16_rounding="stochastic", rounding_seed=10)
    changed = _run(other_seed, params, 3)
    assert not torch.equal(changed[-1], runs[0][-1])


def test_stochastic_rounding_seed_comes_from_torch_manual_seed():
    torch.manual_seed(4)
    a = fastopt.FusedSGD(_params(), lr=0.1, bf16_rounding="stochastic")
    torch.manual_seed(4)
    b = fastopt.FusedSGD(_params(), lr=0.1, bf16_rounding="stochastic")
    assert a.param_groups[0]["rounding_seed"] == b.param_groups[0]["rounding_seed"]
    assert 0 <= a.param_groups[0]["rounding_seed"] < 2**32


def test_stochastic_rounding_resumes_exactly():
    params = _params()
    opt = fastopt.FusedAdamW(params, lr=1e-2, bf16_rounding="stochastic", rounding_seed=21)
    _run(opt, params, 3)
    saved = copy.deepcopy(opt.state_dict())
    snapshot = [p.detach().clone() for p in params]
    expected = _run(opt, params, 3, first=3)

    params2 = [torch.nn.Parameter(s.clone()) for s in snapshot]
    opt2 = fastopt.FusedAdamW(params2, lr=1e-2, bf16_rounding="stochastic")  # another seed
    opt2.load_state_dict(saved)
    assert opt2.param_groups[0]["rounding_seed"] == 21
    got = _run(opt2, params2, 3, first=3)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def test_stochastic_rounding_leaves_float16_and_float32_params_at_nearest():
    params = [*_params(torch.float16, [(100,)]), *_params(torch.float32, [(100,)], seed=3)]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = fastopt.FusedAdamW(params, lr=1e-2, bf16_rounding="stochastic")
    ref_opt = fastopt.FusedAdamW(ref, lr=1e-2)
    for a, b in zip(_run(opt, params, 3), _run(ref_opt, ref, 3)):
        assert torch.equal(a, b)


# --- Kahan summation ------------------------------------------------------------------------------
def _kahan_reference(cls, kw, params, steps):
    """The rule written out: the update runs on a float32 param holding the 16-bit value p0,
    giving pv; c = comp + (pv - p0); p = round(p0 + c); comp = round(c - (p - p0))."""
    work = [torch.nn.Parameter(p.detach().float()) for p in params]
    opt = cls(work, **kw)
    values = [p.detach().clone() for p in params]
    comps = [torch.zeros_like(p) for p in values]
    for step in range(steps):
        grads = _grads(step, params)
        p0s = [v.float() for v in values]
        for w, p0, g in zip(work, p0s, grads):
            w.data.copy_(p0)
            w.grad = g.float()
        opt.step()
        for i, (w, p0) in enumerate(zip(work, p0s)):
            c = comps[i].float() + (w.detach() - p0)
            values[i] = (p0 + c).to(values[i].dtype)
            comps[i] = (c - (values[i].float() - p0)).to(values[i].dtype)
    return values, comps


@pytest.mark.parametrize("dtype", [BF16, torch.float16])
@pytest.mark.parametrize("name", ["FusedSGD", "FusedAdamW", "FusedLion", "FusedAdagrad"])
def test_kahan_matches_the_written_out_rule(name, dtype):
    cls = getattr(fastopt, name)
    kw = FIRST_CASE[name]
    params = _params(dtype)
    expected, comps = _kahan_reference(cls, kw, params, 4)
    opt = cls(params, **kw, kahan_summation=True)
    got = _run(opt, params, 4)
    for p, a, b, c in zip(params, got, expected, comps):
        assert torch.equal(a, b)
        assert torch.equal(opt.state[p]["kahan_comp"], c)
        assert opt.state[p]["kahan_comp"].dtype == dtype


def test_kahan_keeps_updates_a_bf16_param_loses():
    p = torch.nn.Parameter(torch.ones(64, dtype=BF16))
    opt = fastopt.FusedSGD([p], lr=1.0, kahan_summation=True)
    for _ in range(100):
        p.grad = torch.full_like(p, 2**-12)
        opt.step()
    exact = 1.0 - 100 * 2**-12
    total = p.detach().float() + opt.state[p]["kahan_comp"].float()
    assert torch.allclose(total, torch.full((64,), exact), atol=2**-16)
    assert abs(p.detach().float().mean().item() - exact) <= 2**-8


def test_kahan_tracks_fp32_as_well_as_torch_optimi():
    """Against optimi's Kahan-compensated AdamW (its CPU for-loop path): both stay within a few
    bfloat16 ulps of a float32 run, and fastopt is no farther from it than optimi."""
    optimi = pytest.importorskip("optimi")
    shapes = [(257,), (33, 17)]
    params = _params(shapes=shapes)
    ref = [torch.nn.Parameter(p.detach().float()) for p in params]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = fastopt.FusedAdamW(params, lr=1e-3, weight_decay=0.0, kahan_summation=True)
    ref_opt = torch.optim.AdamW(ref, lr=1e-3, weight_decay=0.0)
    their_opt = optimi.AdamW(theirs, lr=1e-3, weight_decay=0.0, kahan_sum=True, foreach=False)
    for step in range(300):
        for a, b, c, g in zip(params, ref, theirs, _grads(step, params)):
            a.grad, b.grad, c.grad = g, g.float(), g.clone()
        ours.step()
        ref_opt.step()
        their_opt.step()
    for a, b, c in zip(params, ref, theirs):
        ours_err = (a.detach().float() - b.detach()).abs().mean().item()
        their_err = (c.detach().float() - b.detach()).abs().mean().item()
        plain_ulp = b.detach().abs().mean().item() * 2**-8
        assert ours_err < plain_ulp and their_err < plain_ulp
        assert ours_err <= their_err * 1.25


# --- every mode on every engine ---------------------------------------------------------------------
@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
@pytest.mark.parametrize("name", ["FusedSGD", "FusedAdamW", "FusedLARS", "FusedLAMB", "FusedAdan"])
def test_modes_identical_on_cpu_and_emulated_cuda_engines(name, mode):
    SIMT = pytest.importorskip("fastopt._C_simt")
    cls = getattr(fastopt, name)
    results = []
    for module in (CPU, SIMT):
        with engine(module):
            params = _params()
            opt = cls(params, **FIRST_CASE[name], **mode)
            got = _run(opt, params, 3)
            aux = [dict(opt.state[p]) for p in params]
        results.append((got, aux))
    (a_params, a_states), (b_params, b_states) = results
    reduction = name in ("FusedLARS", "FusedLAMB")  # norms: another reduction tree
    for a, b in zip(a_params, b_params):
        if reduction:
            torch.testing.assert_close(a.float(), b.float(), rtol=1e-2, atol=1e-2)
        else:
            assert torch.equal(a, b)
    for sa, sb in zip(a_states, b_states):
        assert sorted(sa) == sorted(sb)
        for key in ("master_param", "kahan_comp"):
            if key in sa and not reduction:
                assert torch.equal(sa[key], sb[key])


@pytest.mark.parametrize("mode", MODES, ids=MODE_IDS)
def test_modes_independent_of_chunking(mode):
    """The emulated CUDA engine cut into chunks of 1000 elements (not a multiple of the 8
    elements one Philox call serves) gives the CPU engine's bits."""
    SIMT = pytest.importorskip("fastopt._C_simt")
    saved = SIMT.cuda_launch_limits()
    results = []
    try:
        SIMT.set_cuda_launch_limits(chunk_elems=1000)
        for module in (CPU, SIMT):
            with engine(module):
                params = _params()
                results.append(_run(fastopt.FusedAdamW(params, lr=1e-2, **mode), params, 2))
    finally:
        SIMT.set_cuda_launch_limits(**saved)
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_modes_on_non_contiguous_params():
    base = torch.randn(40, 30).to(BF16)
    for mode in MODES:
        dense = torch.nn.Parameter(base.clone().t())  # dense, not contiguous
        strided = torch.nn.Parameter(base.clone()[:, ::2])  # neither: staged
        ref = [torch.nn.Parameter(t.detach().contiguous()) for t in (dense, strided)]
        opt = fastopt.FusedAdamW([dense, strided], lr=1e-2, **mode)
        ref_opt = fastopt.FusedAdamW(ref, lr=1e-2, **mode)
        for step in range(2):
            g = torch.Generator().manual_seed(step)
            for p, r in zip((dense, strided), ref):
                grad = torch.randn(p.shape, generator=g).to(BF16)
                p.grad, r.grad = grad, grad.clone()
            opt.step()
            ref_opt.step()
        if mode.get("bf16_rounding"):  # the rounding bits follow memory order: check neighbours
            continue
        assert torch.equal(dense.detach(), ref[0].detach())
        assert torch.equal(strided.detach(), ref[1].detach())


# --- options --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,message",
    [
        (dict(master_weights=True, kahan_summation=True), "choose one of"),
        (dict(master_weights=True, bf16_rounding="stochastic"), "choose one of"),
        (dict(bf16_rounding="up"), "bf16_rounding must be"),
        (dict(rounding_seed=3), "rounding_seed is used by"),
        (dict(bf16_rounding="stochastic", rounding_seed=-1), "rounding_seed must be in"),
        (dict(master_weights=1), "master_weights must be True or False"),
        (dict(bf16_rounding="stochastic", capturable=True), "capturable=False"),
    ],
)
def test_bad_precision_options_are_refused(kw, message):
    with pytest.raises((ValueError, TypeError), match=message):
        fastopt.FusedAdamW(_params(), **kw)


def test_unknown_keyword_names_the_precision_options():
    with pytest.raises(TypeError, match="unexpected keyword 'master_weight'.*master_weights"):
        fastopt.FusedSGD(_params(), lr=0.1, master_weight=True)


def test_config_builds_master_weights():
    cfg = dict(type="FusedAdamW", lr=1e-3, master_weights=True)
    opt = fastopt.registry.OPTIMIZERS.build({**cfg, "params": _params(shapes=[(5,)])})
    assert opt.precision.master_weights


def test_memory_per_param_of_each_mode():
    """The README's table: bytes of param + states per element of a bfloat16 param."""
    expected = {
        "plain (fp32 states)": 2 + 8,
        "state_dtype='param'": 2 + 4,
        "master_weights": 2 + 8 + 4,
        "kahan_summation": 2 + 8 + 2,
        "stochastic": 2 + 8,
        "kahan, state_dtype='param'": 2 + 4 + 2,
        "stochastic, state_dtype='param'": 2 + 4,
    }
    kws = {
        "plain (fp32 states)": {},
        "state_dtype='param'": dict(state_dtype="param"),
        "master_weights": dict(master_weights=True),
        "kahan_summation": dict(kahan_summation=True),
        "stochastic": dict(bf16_rounding="stochastic"),
        "kahan, state_dtype='param'": dict(kahan_summation=True, state_dtype="param"),
        "stochastic, state_dtype='param'": dict(bf16_rounding="stochastic", state_dtype="param"),
    }
    for label, kw in kws.items():
        p = torch.nn.Parameter(torch.randn(1000).to(BF16))
        opt = fastopt.FusedAdamW([p], **kw)
        p.grad = torch.randn(1000).to(BF16)
        opt.step()
        state_bytes = sum(
            t.numel() * t.element_size() for t in opt.state[p].values() if t.numel() > 1
        )
        assert (2000 + state_bytes) / 1000 == expected[label], label


# --- ZeRO -------------------------------------------------------------------------------------------
def _zero_worker(rank, world, out_dir):
    from torch.distributed.optim import ZeroRedundancyOptimizer

    params = _params(shapes=[(30, 20), (20,), (500,), (7,)])
    zero = ZeroRedundancyOptimizer(
        params, optimizer_class=fastopt.FusedAdamW, lr=1e-2, master_weights=True
    )
    assert len(zero.optim.param_groups[0]["params"]) < len(params)
    got = _run(zero, params, 3)
    zero.consolidate_state_dict(to=0)
    if rank == 0:
        state = zero.state_dict()["state"]
        masters = [state[i]["master_param"] for i in range(len(params))]
        torch.save((got, masters), os.path.join(out_dir, "zero.pt"))


@pytest.mark.dist
def test_master_weights_under_zero_sharding(tmp_path):
    dist_run.spawn(_zero_worker, 2, str(tmp_path))
    params = _params(shapes=[(30, 20), (20,), (500,), (7,)])
    opt = fastopt.FusedAdamW(params, lr=1e-2, master_weights=True)
    expected = _run(opt, params, 3)
    got, masters = torch.load(tmp_path / "zero.pt")
    for a, b, p, m in zip(got, expected, params, masters):
        assert torch.equal(a, b)
        assert torch.equal(m, opt.state[p]["master_param"])
