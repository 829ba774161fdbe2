"""Nanoseconds per element of one fused step on one thread, in cache and in memory, per dtype.

    python bench/per_element.py [--optim FusedAdamW] [--repeat 15]

A step whose cost per element is the same in cache (2^18 elements) as in memory (2^22) is bound
by arithmetic, one that gets dearer in memory by bandwidth. Params, grads and states all of the
dtype (`state_dtype="param"`); the host's fixed cost per step (the median one-element step) is
subtracted. Medians of --repeat samples, every step timed round-robin with the others
(fastopt.benchmark.timing.time_interleaved).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch

import fastopt
from fastopt.benchmark.timing import time_interleaved

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SIZES = {"in cache (2^18)": 1 << 18, "in memory (2^22)": 1 << 22}


def step_of(cls: type, n: int, dtype: torch.dtype) -> Callable[[], None]:
    p = torch.nn.Parameter(torch.randn(n).to(dtype))
    p.grad = torch.randn(n).to(dtype)
    return cls([p], lr=1e-3, state_dtype="param").step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optim", default="FusedAdamW", help="a fused optimizer of fastopt")
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cls = getattr(fastopt, args.optim)
    steps = {("host", ""): step_of(cls, 1, torch.float32)}
    steps.update(
        ((dtype, size), step_of(cls, n, DTYPES[dtype]))
        for dtype in DTYPES
        for size, n in SIZES.items()
    )
    stats, errors = time_interleaved(
        {f"{d} {s}": step for (d, s), step in steps.items()}, repeat=args.repeat, warmup=3
    )
    if errors:
        raise SystemExit(f"failed: {errors}")
    host = stats["host "].median
    print(f"{args.optim}, one thread, host cost {host * 1e6:.1f} µs per step subtracted")
    print("| dtype | " + " | ".join(f"{s}, ns/element" for s in SIZES) + " |")
    print("|:---|" + "---:|" * len(SIZES))
    for dtype in DTYPES:
        cells = [(stats[f"{dtype} {s}"].median - host) / n * 1e9 for s, n in SIZES.items()]
        print(f"| {dtype} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
