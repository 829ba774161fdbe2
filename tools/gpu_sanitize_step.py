#!/usr/bin/env python3
"""A few small steps of every code path of the CUDA engine, for compute-sanitizer.

tools/gpu_check.py runs it under memcheck, racecheck and synccheck. Tensors are small (the
sanitizers slow kernels down a hundredfold) but cover: several launches (small launch limits),
vector and scalar (misaligned) chunks, float32 and bf16, a per-tensor reduction (LAMB), the
gradient pipeline with a skipped inf step, and the two-level combine of the total norm.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastopt  # noqa: E402
from fastopt import _C  # noqa: E402

DEV = torch.device("cuda", 0)


def params(dtype: torch.dtype, misaligned: bool = False) -> list[torch.Tensor]:
    out = []
    for n in (1, 7, 4099, 70_001):
        buf = torch.empty(n + 1, dtype=dtype, device=DEV)
        t = (buf[1:] if misaligned else buf[:n]).copy_(torch.linspace(-1, 1, n, device=DEV))
        p = torch.nn.Parameter(t)
        p.grad = torch.full_like(t, 0.01)
        out.append(p)
    return out


def main() -> None:
    saved = _C.set_cuda_launch_limits(max_tensors=2, max_blocks=3)
    try:
        for dtype in (torch.float32, torch.bfloat16):
            for misaligned in (False, True):
                for cls in (fastopt.FusedAdamW, fastopt.FusedLAMB, fastopt.FusedSGD):
                    ps = params(dtype, misaligned)
                    opt = cls(ps, lr=0.01)
                    found = torch.zeros((), device=DEV)
                    norm = torch.zeros((), device=DEV)
                    for i in range(3):
                        if i == 1:
                            ps[2].grad[5] = math.inf
                        elif i == 2:
                            ps[2].grad[5] = 0.0
                        opt.fused_step(max_norm=1.0, found_inf=found, norm_out=norm)
        _C.set_cuda_variants(combine_segment=2)
        ps = params(torch.float32)
        fastopt.FusedAdamW(ps, lr=0.01).fused_step(max_norm=1.0)
    finally:
        _C.set_cuda_launch_limits(**saved)
        _C.set_cuda_variants()
    torch.cuda.synchronize()
    print("sanitize steps done")


if __name__ == "__main__":
    main()
