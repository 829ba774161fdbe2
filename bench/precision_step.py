"""CPU time of one optimizer step per precision mode (bf16 params, 2M elements, one thread).

    python bench/precision_step.py

Process CPU time, best of 7 rounds of 20 steps: a figure that other processes on the machine
disturb less than wall time does.
"""

from __future__ import annotations

import time

import torch

import fastopt

MODES = {
    "nearest": {},
    "master_weights": dict(master_weights=True),
    "kahan_summation": dict(kahan_summation=True),
    "stochastic": dict(bf16_rounding="stochastic"),
}
OPTIMIZERS = {"FusedAdamW": {}, "FusedSGD (momentum)": dict(momentum=0.9)}


def step_ms(cls: type, kwargs: dict, n: int = 1 << 21) -> float:
    p = torch.nn.Parameter(torch.randn(n).to(torch.bfloat16))
    p.grad = torch.randn(n).to(torch.bfloat16)
    opt = cls([p], lr=1e-3, **kwargs)
    for _ in range(5):
        opt.step()
    best = float("inf")
    for _ in range(7):
        start = time.process_time()
        for _ in range(20):
            opt.step()
        best = min(best, (time.process_time() - start) / 20)
    return best * 1e3


def main() -> None:
    torch.set_num_threads(1)
    print("| mode | " + " | ".join(OPTIMIZERS) + " |")
    print("|:---|" + "---:|" * len(OPTIMIZERS))
    for mode, kw in MODES.items():
        cells = []
        for name, extra in OPTIMIZERS.items():
            cls = getattr(fastopt, name.split()[0])
            cells.append(f"{step_ms(cls, {**extra, **kw}):.2f} ms")
        print(f"| {mode} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
