"""Nanoseconds per element of one fused step on one thread, in cache and in memory, per dtype.

    python bench/per_element.py [--optim FusedAdamW] [--rounds 9]

A step whose cost per element is the same in cache (2^18 elements) as in memory (2^22) is bound
by arithmetic, one that gets dearer in memory by bandwidth. Params, grads and states all of the
dtype (`state_dtype="param"`); the host's fixed cost per step (a one-element step) is subtracted.
Best of --rounds rounds of 200 (cache) or 20 (memory) steps, wall time.
"""

from __future__ import annotations

import argparse
import time

import torch

import fastopt

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def seconds_per_step(cls: type, n: int, dtype: torch.dtype, steps: int, rounds: int) -> float:
    p = torch.nn.Parameter(torch.randn(n).to(dtype))
    p.grad = torch.randn(n).to(dtype)
    opt = cls([p], lr=1e-3, state_dtype="param")
    for _ in range(3):
        opt.step()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        best = min(best, (time.perf_counter() - start) / steps)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optim", default="FusedAdamW", help="a fused optimizer of fastopt")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cls = getattr(fastopt, args.optim)
    host = seconds_per_step(cls, 1, torch.float32, 2000, args.rounds)
    print(f"{args.optim}, one thread, host cost {host * 1e6:.1f} µs per step subtracted")
    print("| dtype | in cache (2^18), ns/element | in memory (2^22), ns/element |")
    print("|:---|---:|---:|")
    for name, dtype in DTYPES.items():
        cells = [
            (seconds_per_step(cls, n, dtype, steps, args.rounds) - host) / n * 1e9
            for n, steps in ((1 << 18, 200), (1 << 22, 20))
        ]
        print(f"| {name} | {cells[0]:.3f} | {cells[1]:.3f} |")


if __name__ == "__main__":
    main()
