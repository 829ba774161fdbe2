"""The optimizer step over an FSDP2-sharded GPT-2 small, 2 processes (gloo, CPU).

    torchrun --nproc_per_node 2 bench/fsdp2_step.py [--repeat 10] [--scale 1.0]

Each process holds its shards of GPT-2 small's 148 tensors (``fully_shard`` per transformer
block, then the root) with random DTensor grads; fastopt's FusedAdamW, torch's AdamW
(foreach) and torch's AdamW (fused) step the same shards, interleaved round by round. Rank 0
prints the median ms per step and the speed-ups.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
from torch import nn

import fastopt
from fastopt.benchmark.param_sets import get_set


class Block(nn.Module):
    def __init__(self, shapes: list[tuple[str, tuple[int, ...]]]) -> None:
        super().__init__()
        for name, shape in shapes:
            self.register_parameter(name.replace(".", "_"), nn.Parameter(torch.randn(shape)))


def gpt2(scale: float) -> nn.Module:
    shapes = get_set("gpt2").scaled_shapes(scale)
    blocks: dict[str, list] = {}
    for name, shape in shapes:
        key = ".".join(name.split(".")[:2]) if name.startswith("h.") else "rest"
        blocks.setdefault(key, []).append((name, shape))
    model = nn.Module()
    model.blocks = nn.ModuleDict({k.replace(".", "_"): Block(v) for k, v in blocks.items()})
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = gpt2(args.scale)
    for block in model.blocks.values():
        fully_shard(block)
    fully_shard(model)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    candidates = {
        "fastopt FusedAdamW": fastopt.FusedAdamW(params, lr=1e-4),
        "torch AdamW foreach": torch.optim.AdamW(params, lr=1e-4, foreach=True),
        "torch AdamW fused": torch.optim.AdamW(params, lr=1e-4, fused=True),
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(args.repeat + 2):
        for name, opt in candidates.items():
            dist.barrier()
            start = time.perf_counter()
            opt.step()
            elapsed = time.perf_counter() - start
            if round_ >= 2:  # warm-up rounds create the states
                times[name].append(elapsed)
    medians = {n: statistics.median(t) * 1e3 for n, t in times.items()}
    if dist.get_rank() == 0:
        local = sum(p._local_tensor.numel() for p in params)
        print(
            f"GPT-2 small x{args.scale}, FSDP2 over {dist.get_world_size()} processes "
            f"({local:,} params on rank 0), {torch.get_num_threads()} thread(s) per process"
        )
        ours = medians["fastopt FusedAdamW"]
        for name, ms in medians.items():
            print(f"  {name:22s} {ms:8.2f} ms  ({ms / ours:.2f}x of fastopt's time)")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
