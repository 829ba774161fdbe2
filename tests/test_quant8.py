"""The 8-bit quantizer (csrc/core/quant8.h, exported by fastopt._C) against the paper's
construction in tests/quant8_reference.py: maps, exact codes, round-trip bounds, zeros, infs
and NaNs."""

from __future__ import annotations

import numpy as np
import pytest
import quant8_reference as ref
import torch
from conftest import run_on_every_isa

from fastopt.ops import catalog, quant8

BLOCK = ref.BLOCK


def engine_quantize(x: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    codes, absmax = quant8.quantize(torch.from_numpy(np.ascontiguousarray(x, np.float32)), signed)
    return codes.numpy(), absmax.numpy()


def engine_dequantize(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    out = quant8.dequantize(torch.from_numpy(codes), torch.from_numpy(absmax), quant8.qmap(signed))
    return out.numpy()


def test_block_size_is_declared_once():
    assert catalog.quant_block() == quant8.block() == BLOCK == 256
    assert catalog.quant_min_elems() == quant8.min_elems() == 4096


@pytest.mark.parametrize("signed", [True, False])
def test_maps_are_the_papers(signed):
    m = quant8.qmap(signed).numpy()
    np.testing.assert_array_equal(m, ref.dynamic_map(signed))  # bit for bit
    assert m.dtype == np.float32 and m.shape == (256,) and np.all(np.diff(m) > 0)
    assert m[-1] == 1.0 and m[quant8.zero_code(signed)] == 0.0
    positive = m[m > 0]
    # 7 decades 1e-6 .. 1: the smallest positive value is in the lowest one
    assert 1e-7 < positive.min() < 1e-6
    if signed:  # symmetric but for +1: 127 negative values, 0, 127 positive, 1
        assert quant8.zero_code(True) == 127
        np.testing.assert_array_equal(-m[:127][::-1], positive[:-1])
    else:
        assert quant8.zero_code(False) == 0 and m.min() == 0.0


def test_maps_match_bitsandbytes_construction():
    """bitsandbytes' create_dynamic_map (float32 linspace) gives the same values within float32
    rounding: the same data type."""
    for signed in (True, False):
        values = [0.0, 1.0]
        for i in range(7):
            k = 2**i if signed else 2 ** (i + 1)
            b = torch.linspace(0.1, 1, k + 1, dtype=torch.float32)
            means = ((b[:-1] + b[1:]) / 2.0) * 10 ** (-6 + i)
            values += means.tolist() + ((-means).tolist() if signed else [])
        bnb = np.sort(np.array(values, dtype=np.float32))
        np.testing.assert_allclose(quant8.qmap(signed).numpy(), bnb, rtol=2e-6, atol=0)


@pytest.mark.parametrize("signed", [True, False])
def test_exact_codes_of_chosen_values(signed):
    m = ref.dynamic_map(signed)
    zero = quant8.zero_code(signed)
    # a block with absmax 2 (a power of two: x / absmax is exact): each map value comes back
    codes = np.arange(256, dtype=np.uint8)
    x = m[codes] * np.float32(2)
    got, absmax = engine_quantize(x, signed)
    assert absmax.tolist() == [2.0]
    np.testing.assert_array_equal(got, codes)
    # values between map points: the nearest, a midpoint taking the upper one
    mid = ref.midpoints(m)
    # two blocks of absmax 1: the midpoints, then the floats just below them
    x = np.concatenate([[1.0], mid, [1.0], np.nextafter(mid, np.float32(-np.inf)), [0.0]])
    got, absmax = engine_quantize(x.astype(np.float32), signed)
    assert absmax.tolist() == [1.0, 1.0, 0.0]
    np.testing.assert_array_equal(got[1:256], np.arange(1, 256))
    np.testing.assert_array_equal(got[257:512], np.arange(0, 255))
    assert got[0] == got[256] == 255 and got[-1] == zero
    # hand-checked codes: +-absmax, half, tiny values below the map's resolution
    x = np.array([4.0, -4.0, 2.0, 1e-9, -1e-9], dtype=np.float32)
    got, absmax = engine_quantize(x, signed)
    assert absmax.tolist() == [4.0]
    if signed:  # -1 is not in the signed map: its nearest is -0.99297 (code 0)
        assert got.tolist() == [255, 0, int(np.argmin(np.abs(m - 0.5))), zero, zero]
    else:  # negative values (never in an unsigned state) take the nearest, 0
        assert got.tolist() == [255, 0, int(np.argmin(np.abs(m - 0.5))), zero, 0]


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("n", [1, 255, 256, 257, 1000, 4096 + 17])
def test_random_values_equal_the_reference(signed, n):
    rng = np.random.default_rng(n + signed)
    # magnitudes over many decades, per block, as optimizer states have
    x = (rng.standard_normal(n) * 10.0 ** rng.uniform(-8, 3, n)).astype(np.float32)
    if not signed:
        x = np.abs(x)
    codes, absmax = engine_quantize(x, signed)
    want_codes, want_absmax = ref.quantize(x, signed)
    np.testing.assert_array_equal(absmax, want_absmax)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(
        engine_dequantize(codes, absmax, signed), ref.dequantize(codes, absmax, signed)
    )


@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_error_per_block(signed):
    """Each value comes back within half the gap between its two nearest map values, times its
    block's absmax (the definition of nearest rounding), plus float32 rounding; the absmax of
    each block is exact; and in the top decade (|x| > absmax / 10) the error is at most
    0.9 / 64 / 2 (signed) or 0.9 / 128 / 2 (unsigned) of the absmax."""
    rng = np.random.default_rng(7)
    n = 64 * BLOCK
    scales = np.repeat(10.0 ** rng.uniform(-10, 4, n // BLOCK), BLOCK)
    x = (rng.standard_normal(n) * scales).astype(np.float32)
    if not signed:
        x = x * x
    codes, absmax = engine_quantize(x, signed)
    back = engine_dequantize(codes, absmax, signed)
    blocks = x.reshape(-1, BLOCK)
    np.testing.assert_array_equal(absmax, np.abs(blocks).max(axis=1))
    m = ref.dynamic_map(signed).astype(np.float64)
    gaps = np.diff(m)
    # the largest half gap next to the value's normalized position
    t = np.abs(x.astype(np.float64)) / np.repeat(absmax, BLOCK)
    t = np.where(x < 0, -t, t)
    pos = np.clip(np.searchsorted(m, t), 1, 255)
    half_gap = gaps[pos - 1] / 2
    err = np.abs(back.astype(np.float64) - x) / np.repeat(absmax, BLOCK)
    assert np.all(err <= half_gap * (1 + 1e-5) + 1e-7)
    top = np.abs(t) > 0.1
    bound = 0.9 / (64 if signed else 128) / 2
    assert err[top].max() <= bound * (1 + 1e-5)
    # small values keep relative precision: decade 1e-3..1e-2 of the block's range
    mid = (np.abs(t) > 1e-3) & (np.abs(t) < 1e-2)
    assert mid.any()
    assert np.max(err[mid] / np.abs(t[mid])) < (0.9 / (8 if signed else 16)) / 0.1 / 2 * 1.0001


@pytest.mark.parametrize("signed", [True, False])
def test_zero_blocks(signed):
    x = np.zeros(3 * BLOCK + 5, dtype=np.float32)
    x[BLOCK + 3] = -0.0
    x[2 * BLOCK : 3 * BLOCK] = 1.5  # a non-zero block between zero blocks
    codes, absmax = engine_quantize(x, signed)
    assert absmax.tolist() == [0.0, 0.0, 1.5, 0.0]
    assert np.all(codes[: 2 * BLOCK] == quant8.zero_code(signed))
    back = engine_dequantize(codes, absmax, signed)
    np.testing.assert_array_equal(back, x)
    assert not np.signbit(back[: 2 * BLOCK]).any()  # +0, as a new state


@pytest.mark.parametrize("signed", [True, False])
@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_values_poison_their_block_only(signed, bad):
    """Documented behaviour: a block holding an inf or a NaN stores absmax NaN, so every value
    of it dequantizes to NaN (never a silently finite state); other blocks are untouched."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal(3 * BLOCK).astype(np.float32)
    x[BLOCK + 10] = bad
    codes, absmax = engine_quantize(x, signed)
    want_codes, want_absmax = ref.quantize(x, signed)
    np.testing.assert_array_equal(codes, want_codes)
    np.testing.assert_array_equal(absmax, want_absmax)  # NaN == NaN here
    assert np.isnan(absmax[1]) and np.isfinite(absmax[[0, 2]]).all()
    back = engine_dequantize(codes, absmax, signed)
    assert np.isnan(back[BLOCK : 2 * BLOCK]).all()
    assert np.isfinite(back[:BLOCK]).all() and np.isfinite(back[2 * BLOCK :]).all()


def test_permuted_layout_blocks_follow_memory_order():
    """A state laid out like a permuted param: its blocks run over memory, as the engine walks."""
    like = torch.empty(64, 128).t()  # (128, 64), stride (1, 128)
    x = torch.randn(128, 64)
    codes, absmax = quant8.quantize(x, True, like=like)
    assert codes.stride() == like.stride()
    flat = x.t().contiguous().reshape(-1).numpy()  # memory order
    want_codes, want_absmax = ref.quantize(flat, True)
    np.testing.assert_array_equal(absmax.numpy(), want_absmax)
    np.testing.assert_array_equal(codes.t().reshape(-1).numpy(), want_codes)
    back = quant8.dequantize(codes, absmax, quant8.qmap(True))
    assert back.shape == x.shape
    np.testing.assert_array_equal(
        back.t().reshape(-1).numpy(), ref.dequantize(want_codes, want_absmax, True)
    )


@pytest.mark.parametrize("signed", [True, False])
def test_host_table_encoder_equals_the_search(signed):
    """The host's table lookup and the device's binary search are one function: every midpoint
    and its neighbours, every bucket edge, and random values of every magnitude."""
    from fastopt import _C

    mid = ref.midpoints(ref.dynamic_map(signed))
    bits = mid.view(np.int32).astype(np.int64)
    near = np.concatenate([bits + d for d in range(-3, 4)])
    edges = np.arange(0, 0x40000000, 1 << (23 - 7), dtype=np.int64)  # every bucket edge < 2
    rng = np.random.default_rng(0)
    rand = rng.integers(0, 0x7F800001, 200_000, dtype=np.int64)  # finite and inf magnitudes
    mags = np.concatenate([near, edges, edges + 1, edges - 1, rand])
    mags = mags[(mags >= 0) & (mags <= 0x7F800000)].astype(np.uint32)
    x = np.concatenate([mags, mags | np.uint32(0x80000000), [0x7FC00000]]).view(np.float32)
    x = np.ascontiguousarray(x)
    out = {}
    for search in (True, False):
        codes = np.empty(x.size, dtype=np.uint8)
        _C.encode_8bit(x.ctypes.data, x.size, signed, search, codes.ctypes.data)
        out[search] = codes
    np.testing.assert_array_equal(out[False], out[True])
    np.testing.assert_array_equal(out[True], ref.quantize_normalized(x, signed))


_ISA_SCRIPT = """
import sys, numpy as np
import fastopt._ext as ext
C = ext.require_C()
x = np.load(sys.argv[1])
out = {"isa": np.array(C.cpu_isa())}
for signed in (True, False):
    codes = np.empty(x.size, np.uint8)
    absmax = np.empty(-(-x.size // 256), np.float32)
    C.quantize_8bit(x.ctypes.data, x.size, signed, codes.ctypes.data, absmax.ctypes.data)
    back = np.empty(x.size, np.float32)
    C.dequantize_8bit(codes.ctypes.data, absmax.ctypes.data, x.size, signed, back.ctypes.data)
    out.update({f"codes_{signed}": codes, f"absmax_{signed}": absmax, f"back_{signed}": back})
np.savez(sys.argv[2], **out)
"""


def _isa_inputs() -> np.ndarray:
    """Blocks of absmax 1 holding every midpoint of both maps and its float32 neighbours, every
    bucket edge of the host's table and random bit patterns of every magnitude (both signs);
    then random blocks over many decades, a block with an inf, one with a NaN, a zero block and
    a short tail."""
    mids = np.concatenate([ref.midpoints(ref.dynamic_map(s)) for s in (True, False)])
    bits = np.abs(mids).view(np.int32).astype(np.int64)
    near = np.concatenate([bits + d for d in range(-2, 3)])
    edges = np.arange(0x34000000, 0x3F800000, 1 << (23 - 7), dtype=np.int64)
    rng = np.random.default_rng(11)
    rand = rng.integers(0, 0x3F800000, 20_000, dtype=np.int64)
    mags = np.concatenate([near, edges, edges - 1, rand]).astype(np.uint32)
    vals = mags.view(np.float32)
    vals = np.where(rng.random(vals.size) < 0.5, -vals, vals).astype(np.float32)
    per = BLOCK - 1
    vals = np.pad(vals, (0, -vals.size % per)).reshape(-1, per)
    normalized = np.concatenate([np.ones((vals.shape[0], 1), np.float32), vals], axis=1)
    decades = (rng.standard_normal(40 * BLOCK) * 10.0 ** rng.uniform(-8, 3, 40 * BLOCK)).astype(
        np.float32
    )
    special = rng.standard_normal((3, BLOCK)).astype(np.float32)
    special[0, 5], special[1, 9], special[2] = np.inf, np.nan, 0.0
    tail = rng.standard_normal(77).astype(np.float32)
    return np.concatenate([normalized.ravel(), decades, special.ravel(), tail])


def test_every_isa_quantizes_as_the_reference(tmp_path):
    """The CPU engine's vectorized (de)quantization, under every code path this CPU runs (gathers
    on AVX2 / AVX-512, scalar on baseline), gives the reference's codes, absmax and values."""
    x = _isa_inputs()
    np.save(tmp_path / "x.npy", x)
    for isa, out in run_on_every_isa(_ISA_SCRIPT, tmp_path, str(tmp_path / "x.npy")).items():
        got = np.load(out)
        assert str(got["isa"]) == isa
        for signed in (True, False):
            want_codes, want_absmax = ref.quantize(x, signed)
            np.testing.assert_array_equal(got[f"absmax_{signed}"], want_absmax, err_msg=isa)
            np.testing.assert_array_equal(got[f"codes_{signed}"], want_codes, err_msg=isa)
            np.testing.assert_array_equal(
                got[f"back_{signed}"], ref.dequantize(want_codes, want_absmax, signed), err_msg=isa
            )
