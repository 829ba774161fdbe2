"""Engine properties: thread-count and instruction-set independence, conversions, chunking."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from conftest import fastopt_subprocess_env

import fastopt
from fastopt._ext import require_C
from fastopt.catalog import CATALOG

C = require_C()


def _train(name, dtype=torch.float32, steps=5, threads=None, **kw):
    if threads is not None:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    # several chunks per tensor, so both threads get work
    params = [
        torch.nn.Parameter(torch.randn(n, generator=g).to(dtype)) for n in (300_001, 70_000, 5)
    ]
    opt = getattr(fastopt, name)(params, **kw)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(dtype)
        opt.step()
    return [p.detach().clone() for p in params]


# every optimizer, with its catalog's last (most featureful) test case
LAST_CASES = [(o.name, list(o.cases.values())[-1]) for o in CATALOG]


@pytest.mark.parametrize("name,kw", LAST_CASES, ids=[n for n, _ in LAST_CASES])
def test_bitwise_identical_with_one_and_two_threads(name, kw):
    before = torch.get_num_threads()
    try:
        one = _train(name, threads=1, **kw)
        two = _train(name, threads=2, **kw)
    finally:
        torch.set_num_threads(before)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_bitwise_identical_across_instruction_sets(tmp_path):
    """No FMA contraction and fixed reduction lanes: every code path gives the same bits."""
    script = (
        "import torch, fastopt, sys\n"
        "from test_engine import _train\n"
        "out = _train('FusedAdamW', dtype=torch.bfloat16, lr=1e-2) + _train('FusedLARS', lr=0.1, momentum=0.9)\n"
        "out += _train('FusedSGD', dtype=torch.float16, lr=0.1, momentum=0.9, nesterov=True)\n"
        "from test_engine import LAST_CASES\n"
        "for name, kw in LAST_CASES:\n"
        "    out += _train(name, dtype=torch.bfloat16, **kw)\n"
        "torch.save(out, sys.argv[1])\n"
    )
    results = {}
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    supported = ["baseline"]
    info = fastopt._ext.build_info()
    if info["cpu_isa"] in ("avx2", "avx512"):
        supported.append("avx2")
    if info["cpu_isa"] == "avx512":
        supported.append("avx512")
    assert len(supported) >= 2, "this check needs a CPU with AVX2"
    for isa in supported:
        path = str(tmp_path / f"isa_{isa}.pt")
        env = dict(fastopt_subprocess_env(tests_dir), FASTOPT_CPU_ISA=isa)
        subprocess.run([sys.executable, "-c", script, path], check=True, env=env, cwd=tmp_path)
        results[isa] = torch.load(path)
    first = results[supported[0]]
    for isa in supported[1:]:
        for a, b in zip(first, results[isa]):
            assert torch.equal(a, b), f"{isa} differs from {supported[0]}"


def test_isa_override_is_reported_and_checked(tmp_path):
    env = dict(fastopt_subprocess_env(), FASTOPT_CPU_ISA="baseline")
    out = subprocess.run(
        [sys.executable, "-m", "fastopt", "info", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert '"cpu_isa": "baseline"' in out.stdout
    env["FASTOPT_CPU_ISA"] = "sse9"
    bad = subprocess.run(
        [sys.executable, "-c", "import fastopt._ext as e; e.require_C().cpu_isa()"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "FASTOPT_CPU_ISA must be baseline, avx2 or avx512" in bad.stderr


def _special_values(dtype):
    finfo = torch.finfo(dtype)
    vals = [
        0.0,
        -0.0,
        1.0,
        -1.0,
        finfo.max,
        -finfo.max,
        finfo.tiny,
        finfo.tiny / 4,
        float("inf"),
        float("-inf"),
        float("nan"),
    ]
    return torch.tensor(vals, dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float32_to_low_precision_rounding_matches_torch(dtype):
    """p <- p - 1 * g with a float32 grad: the engine's store rounds exactly as torch's cast."""
    g = torch.Generator().manual_seed(0)
    base = torch.cat(
        [
            torch.randn(100_000, generator=g)
            * 10 ** torch.randint(-8, 5, (100_000,), generator=g).float(),
            _special_values(dtype),
        ]
    )
    grad = torch.cat([torch.randn(100_000, generator=g) * 1e-3, _special_values(dtype).flip(0)])
    p = torch.nn.Parameter(base.to(dtype))
    p.grad_dtype = torch.float32
    p.grad = grad.clone()
    expected = (p.detach().float() - grad).to(dtype)
    fastopt.FusedSGD([p], lr=1.0).step()
    got, want = p.detach(), expected
    nan = torch.isnan(want.float())
    assert torch.equal(torch.isnan(got.float()), nan)
    assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_loads_are_exact(dtype):
    """Every 16-bit pattern survives load + store unchanged (lr = 0 step)."""
    bits = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16)
    values = bits.view(dtype)
    finite = torch.isfinite(values.float())
    p = torch.nn.Parameter(values[finite].clone())
    p.grad = torch.zeros_like(p)
    fastopt.FusedSGD([p], lr=0.0).step()
    assert torch.equal(p.detach().view(torch.int16), values[finite].view(torch.int16))


def test_one_engine_call_for_all_groups():
    """One group per param (MMEngine's paramwise layout) is still one table, one pass."""
    params = [torch.nn.Parameter(torch.randn(10)) for _ in range(50)]
    opt = fastopt.FusedAdamW([{"params": [p], "lr": 1e-3 * (i + 1)} for i, p in enumerate(params)])
    for p in params:
        p.grad = torch.randn(10)
    opt.step()
    plan = opt._plan.engine
    assert plan.num_entries == 50 and len(plan.hyper_table) == 50 * len(plan.hyper_names)
    lrs = plan.hyper_table[:: len(plan.hyper_names)]
    assert lrs == pytest.approx([1e-3 * (i + 1) for i in range(50)])


def test_plan_is_cached_until_structure_changes():
    params = [torch.nn.Parameter(torch.randn(10)) for _ in range(3)]
    opt = fastopt.FusedSGD(params, lr=0.1, momentum=0.9)
    for p in params:
        p.grad = torch.randn(10)
    opt.step()
    plan = opt._plan
    for _ in range(3):
        for p in params:
            p.grad = torch.randn(10)  # new grad storage every step (set_to_none semantics)
        opt.param_groups[0]["lr"] *= 0.5  # hyperparameters are re-read, not rebuilt
        opt.step()
    assert opt._plan is plan
    opt.add_param_group({"params": [torch.nn.Parameter(torch.randn(3))]})
    opt.step()
    assert opt._plan is not plan
    plan = opt._plan
    opt.load_state_dict(opt.state_dict())
    opt.step()
    assert opt._plan is not plan


def test_chunks_cover_large_tensors():
    n = C.CPU_CHUNK_ELEMS * 3 + 17
    p = torch.nn.Parameter(torch.zeros(n))
    opt = fastopt.FusedSGD([p], lr=1.0)
    p.grad = -torch.arange(n, dtype=torch.float32)
    opt.step()
    assert opt._plan.engine.num_chunks == 4
    assert torch.equal(p.detach(), torch.arange(n, dtype=torch.float32))
