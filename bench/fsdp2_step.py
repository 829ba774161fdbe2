"""The optimizer step in an FSDP2-sharded GPT-2 small's training iteration, 2 processes (gloo, CPU).

    torchrun --nproc_per_node 2 bench/fsdp2_step.py [--rounds 5] [--seq 64] [--width 1.0]

GPT-2 small (124M params, 148 tensors, the embedding tied to the output) is sharded with
``fully_shard`` per transformer block, then the root. Each round trains one iteration with each
optimizer in turn, on its own copy of the model (the same initial weights and batches):
forward, backward (FSDP2's all-gathers and reduce-scatters over gloo), then the step of
fastopt's FusedAdamW, torch's AdamW (foreach) or torch's AdamW (fused). Rank 0 prints the
median ms of the step and of the whole iteration, and the step's share of the iteration.
``--width`` scales the model's width (quick runs); ``--rounds`` the rounds measured.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import fastopt

OPTIMIZERS = {
    "fastopt FusedAdamW": lambda params: fastopt.FusedAdamW(params, lr=1e-4),
    "torch AdamW foreach": lambda params: torch.optim.AdamW(params, lr=1e-4, foreach=True),
    "torch AdamW fused": lambda params: torch.optim.AdamW(params, lr=1e-4, fused=True),
}


class Block(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.c_attn, self.attn_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).view(b, t, 3, self.heads, -1).unbind(2)
        y = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
        )
        x = x + self.attn_proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, d: int = 768, layers: int = 12, heads: int = 12, vocab: int = 50257):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(1024, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for block in self.h:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)  # tied output embedding


def sharded_gpt2(width: float) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(0)
    model = GPT2(d=int(768 * width) // 12 * 12)
    for block in model.h:
        fully_shard(block)
    fully_shard(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--width", type=float, default=1.0)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    runs = {}
    for name, make in OPTIMIZERS.items():
        model = sharded_gpt2(args.width)
        runs[name] = (model, make(model.parameters()))
    gen = torch.Generator().manual_seed(rank)
    step_ms: dict[str, list[float]] = {name: [] for name in runs}
    iter_ms: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds + 1):  # the first round creates the states
        idx = torch.randint(0, 50257, (1, args.seq + 1), generator=gen)
        for name, (model, opt) in runs.items():
            dist.barrier()
            start = time.perf_counter()
            logits = model(idx[:, :-1])
            F.cross_entropy(logits.flatten(0, 1), idx[0, 1:]).backward()
            dist.barrier()
            stepped = time.perf_counter()
            opt.step()
            opt.zero_grad(set_to_none=True)
            dist.barrier()
            end = time.perf_counter()
            if round_ > 0:
                step_ms[name].append((end - stepped) * 1e3)
                iter_ms[name].append((end - start) * 1e3)
    # the three copies trained alike (Adam's normalised step turns rounding differences of
    # grads near zero into up to lr per step, so: within a few lr)
    (ref, _), *others = runs.values()
    for model, _ in others:
        for a, b in zip(ref.parameters(), model.parameters()):
            torch.testing.assert_close(a.full_tensor(), b.full_tensor(), rtol=0, atol=5e-4)
    if rank == 0:
        model = runs["fastopt FusedAdamW"][0]
        total = sum(p.numel() for p in model.parameters())
        local = sum(p._local_tensor.numel() for p in model.parameters())
        print(
            f"GPT-2 small (width x{args.width}: {total / 1e6:.1f}M params, "
            f"{len(list(model.parameters()))} tensors), FSDP2 over {dist.get_world_size()} "
            f"processes ({local / 1e6:.1f}M on rank 0), batch 1 x {args.seq} tokens, "
            f"{torch.get_num_threads()} thread(s) per process, median of {args.rounds} rounds"
        )
        ours = statistics.median(step_ms["fastopt FusedAdamW"])
        print(f"  {'optimizer':22s} {'step ms':>9s} {'iteration ms':>13s} {'step share':>11s}")
        for name in runs:
            step, it = statistics.median(step_ms[name]), statistics.median(iter_ms[name])
            print(
                f"  {name:22s} {step:9.1f} {it:13.1f} {step / it:10.1%}"
                f"   (step {step / ours:.2f}x fastopt's time)"
            )
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
