"""Engine properties: thread-count and instruction-set independence, conversions, chunking."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import fastopt_subprocess_env, run_on_every_isa

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
        "out += _train('FusedAdamW', dtype=torch.bfloat16, lr=1e-2, state_dtype='8bit')\n"
        "out += _train('FusedLAMB', lr=1e-2, weight_decay=0.1, state_dtype='8bit')\n"
        "from test_engine import LAST_CASES\n"
        "for name, kw in LAST_CASES:\n"
        "    out += _train(name, dtype=torch.bfloat16, **kw)\n"
        "torch.save(out, sys.argv[1])\n"
    )
    outs = run_on_every_isa(script, tmp_path, suffix=".pt")
    results = {isa: torch.load(out) for isa, out in outs.items()}
    (worst, first), *others = results.items()
    for isa, got in others:
        for a, b in zip(first, got):
            assert torch.equal(a, b), f"{isa} differs from {worst}"


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
    assert (
        bad.returncode != 0
        and "FASTOPT_CPU_ISA must be one of baseline, avx2, avx512, avx512_bf16" in bad.stderr
    )


_CONVERSION_SCRIPT = """
import sys, numpy as np, torch, fastopt
bits = np.load(sys.argv[1])
out = {}
for name in ("float16", "bfloat16"):
    dt = getattr(torch, name)
    # store: p = 0 - 1 * (-x) is x exactly, then rounded to 16 bits by the engine
    p = torch.nn.Parameter(torch.zeros(len(bits), dtype=dt))
    p.grad_dtype = torch.float32
    p.grad = -torch.from_numpy(bits.view(np.float32).copy())
    fastopt.FusedSGD([p], lr=1.0).step()
    out["store_" + name] = p.detach().view(torch.int16).numpy().view(np.uint16)
    # load + store of every 16-bit pattern (lr = 0): unchanged, NaNs made canonical
    every = torch.arange(2**16, dtype=torch.int32).to(torch.int16).view(dt)
    q = torch.nn.Parameter(every.clone())
    q.grad = torch.zeros_like(q)
    fastopt.FusedSGD([q], lr=0.0).step()
    out["load_" + name] = q.detach().view(torch.int16).numpy().view(np.uint16)
np.savez(sys.argv[2], **out)
"""


def _conversion_inputs() -> np.ndarray:
    """float32 bit patterns where 16-bit rounding is delicate: every exponent (NaNs and
    subnormals included) with mantissas at and around the rounding boundaries of both
    formats, both signs, plus random patterns; an odd count, so the scalar tail runs too."""
    rng = np.random.default_rng(0)
    half_ulp = [0x7FFF, 0x8000, 0x8001, 0x17FFF, 0x18000, 0x18001]  # bf16 drops 16 bits
    half_fp16 = [0x0FFF, 0x1000, 0x1001, 0x2FFF, 0x3000, 0x3001]  # fp16 drops 13
    mantissas = np.array([0, 1, 0x7FFFFF, 0x400000, 0x200000, *half_ulp, *half_fp16])
    exps = np.arange(256, dtype=np.uint32) << 23
    grid = (exps[:, None] | mantissas[None, :].astype(np.uint32)).ravel()
    both = np.concatenate([grid, grid | 0x80000000])
    rand = rng.integers(0, 2**32, size=200_001, dtype=np.uint64).astype(np.uint32)
    return np.concatenate([both, rand]).astype(np.uint32)


def _reference_store(bits: np.ndarray, name: str) -> np.ndarray:
    """c10's scalar conversions: round to nearest even; NaN -> 0x7fc0 (bf16), sign|0x7e00."""
    x = bits.view(np.float32)
    nan = np.isnan(x)
    if name == "bfloat16":
        rounded = ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        return np.where(nan, np.uint16(0x7FC0), rounded)
    with np.errstate(over="ignore"):
        h = x.astype(np.float16).view(np.uint16)
    return np.where(nan, ((bits >> 16) & 0x8000).astype(np.uint16) | 0x7E00, h)


def test_16bit_conversions_identical_on_every_instruction_set(tmp_path):
    """Every ISA's conversions (F16C / AVX-512 vcvtps2ph, AVX512-BF16 vcvtneps2bf16, or the
    scalar code) give the bits of c10's scalar conversions: NaN payloads and subnormal inputs,
    where the instructions differ, included; loads are exact for all 65536 patterns.
    NaN bits are canonical (ATen's vectorized casts write 0xffff / keep payloads instead)."""
    bits = _conversion_inputs()
    np.save(tmp_path / "in.npy", bits)
    every = np.arange(2**16, dtype=np.uint32).astype(np.uint16)
    nan = np.isnan(bits.view(np.float32))
    reaching = np.where(bits == 0x80000000, np.uint32(0), bits)  # 0 - (-(-0)) is +0
    results = {}
    outs = run_on_every_isa(_CONVERSION_SCRIPT, tmp_path, str(tmp_path / "in.npy"))
    for isa, out_path in outs.items():
        results[isa] = got = dict(np.load(out_path))
        for name in ("float16", "bfloat16"):
            store = got["store_" + name]
            want = _reference_store(reaching, name)
            bad = np.flatnonzero((store != want) & ~nan)
            assert bad.size == 0, (
                f"{isa} {name}: {bad.size} stores differ, e.g. {bits[bad[0]]:#010x} -> "
                f"{store[bad[0]]:#06x}, want {want[bad[0]]:#06x}"
            )
            # a NaN's sign after the arithmetic is the CPU's choice; its bits are canonical
            canonical = 0x7FC0 if name == "bfloat16" else 0x7E00
            mask = 0xFFFF if name == "bfloat16" else 0x7FFF
            assert np.all((store[nan] & mask) == canonical), f"{isa} {name}: NaN not canonical"
            exponent, fraction = (0x7F80, 0x7F) if name == "bfloat16" else (0x7C00, 0x3FF)
            every_nan = ((every & exponent) == exponent) & ((every & fraction) != 0)
            loaded = got["load_" + name]
            assert np.array_equal(loaded[~every_nan], every[~every_nan]), f"{isa} {name}: load"
            assert np.all((loaded[every_nan] & mask) == canonical), f"{isa} {name}: NaN load"
    first, *others = results
    for isa in others:
        for key, value in results[isa].items():
            assert np.array_equal(value, results[first][key]), f"{isa} {key} differs from {first}"


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
