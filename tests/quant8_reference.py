"""Blockwise dynamic 8-bit quantization, written from the paper (the reference of the tests).

Dettmers, Lewis, Shleifer, Zettlemoyer, "8-bit Optimizers via Block-wise Quantization" (ICLR
2022), section 2: a state tensor is cut into blocks of B elements; each block is normalized by
its absolute maximum N_b (kept in float32) into [-1, 1], and each normalized value is stored as
the index of the nearest value of a *dynamic (tree) quantization map*: the bits after the sign
are a run of zeros that sets a decimal exponent (10^0 .. 10^-6), an indicator bit, and a linear
fraction in the remaining bits, so small values keep their relative precision. The map's value
for exponent e and fraction slot j of k is the middle of the j-th of k equal slices of
[0.1, 1] * 10^-e; with 7 exponents the signed map (first moments) has 2^i slots at exponent 6 - i
for each sign, the unsigned map (second moments: the sign bit becomes one more fraction bit)
2^(i + 1); both add 0 and 1. (bitsandbytes' ``create_dynamic_map`` builds the same values with
float32 linspace; these are computed in float64 and rounded once.)

Quantization picks the nearest map value, defined by the float32 midpoints between neighbours
(a value on a midpoint takes the upper one): ``code = #(midpoints <= x / N_b)``. Run this file
with ``--header`` to print the tables of ``csrc/core/quant8.h``.
"""

from __future__ import annotations

import sys

import numpy as np

BLOCK = 256


def dynamic_map(signed: bool) -> np.ndarray:
    values = [0.0, 1.0]
    for i in range(7):
        slots = 2**i if signed else 2 ** (i + 1)
        scale = 1.0 / 10 ** (6 - i)
        for j in range(slots):
            lo, hi = 0.1 + 0.9 * j / slots, 0.1 + 0.9 * (j + 1) / slots
            v = scale * (lo + hi) / 2
            values += [v, -v] if signed else [v]
    out = np.array(sorted(values), dtype=np.float64).astype(np.float32)
    assert out.size == 256 and np.all(np.diff(out) > 0)
    return out


def midpoints(qmap: np.ndarray) -> np.ndarray:
    return ((qmap[:-1] + qmap[1:]) * np.float32(0.5)).astype(np.float32)


def quantize_normalized(x: np.ndarray, signed: bool) -> np.ndarray:
    """Codes of values already divided by their block's absmax (NaN -> code 0)."""
    x = np.asarray(x, dtype=np.float32)
    codes = np.searchsorted(midpoints(dynamic_map(signed)), x, side="right")
    return np.where(np.isnan(x), 0, codes).astype(np.uint8)


def quantize(x: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(codes, absmax) of a flat float32 array, blocks of BLOCK elements (the last may be short).

    absmax is the float32 max |x| of the block; a block holding an inf or a NaN gets absmax NaN
    (it dequantizes to NaN: a non-finite state is never silently replaced); an all-zero block
    absmax 0 and the code of 0."""
    x = np.asarray(x, dtype=np.float32).ravel()
    n = x.size
    blocks = (n + BLOCK - 1) // BLOCK
    codes = np.empty(n, dtype=np.uint8)
    absmax = np.empty(blocks, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for b in range(blocks):
            v = x[b * BLOCK : (b + 1) * BLOCK]
            m = np.float32(np.max(np.abs(v))) if np.all(np.isfinite(v)) else np.float32("nan")
            inv = np.float32(1) / m if m > 0 else np.float32(0)
            absmax[b] = m
            codes[b * BLOCK : (b + 1) * BLOCK] = quantize_normalized(v * inv, signed)
    return codes, absmax


def dequantize(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    qmap = dynamic_map(signed)
    scale = np.repeat(np.asarray(absmax, dtype=np.float32), BLOCK)[: codes.size]
    return (qmap[np.asarray(codes).ravel()] * scale).astype(np.float32)


def _header() -> str:
    """The tables as csrc/core/quant8.h declares them (hex float literals: exact)."""

    def literal(v: np.float32) -> str:
        h = float(v).hex()  # 0x1.<13 hex digits>p<e>: a float32 needs 6
        mant, exp = h.split("p")
        return (mant.rstrip("0").rstrip(".") if "." in mant else mant) + "p" + exp + "f"

    out = []
    for signed, tag in ((True, "SIGNED"), (False, "UNSIGNED")):
        m = dynamic_map(signed)
        for name, values in (("MAP", m), ("MID", midpoints(m))):
            items = [literal(v) for v in values]
            rows = [", ".join(items[i : i + 6]) for i in range(0, len(items), 6)]
            out.append(f"#define FASTOPT_QUANT_{name}_{tag} \\\n  " + ", \\\n  ".join(rows))
    return "\n\n".join(out)


if __name__ == "__main__" and "--header" in sys.argv:
    print(_header())
