"""What the precision modes buy: one small transformer trained in fp32 and four bfloat16 modes.

    python bench/precision.py [--steps 3000] [--out bench/results]

Every run starts from the same float32 init (cast to bfloat16 for the bf16 runs), sees the same
generated batches in the same order and follows the same warmup + cosine lr schedule, with
fastopt's FusedAdamW. Only the optimizer's precision mode differs:

- ``fp32``: params, grads and states in float32 (the reference);
- ``bf16``: model and params in bfloat16, nearest rounding of the updated param (what a plain
  ``model.bfloat16()`` run does: every update under half an ulp of its weight is lost);
- ``bf16+master``: ``master_weights=True`` (float32 copy of each param, state ``master_param``);
- ``bf16+stochastic``: ``bf16_rounding='stochastic'`` (unbiased rounding of the param);
- ``bf16+kahan``: ``kahan_summation=True`` (bfloat16 compensation, state ``kahan_comp``).

The task (``--task``) maps random token sequences to per-token distributions. ``teacher`` (the
default): match a fixed, randomly initialized transformer of the same shape (its logits times
``--teacher-scale``, so its distributions are far from uniform); the loss is the KL divergence
to the teacher, which a student of the same shape can drive to 0, so any floor it stalls at is
the optimizer's. Its curve falls smoothly from the first step, unlike the algorithmic tasks
``reverse`` (y_i = x_{n-1-i}), ``sort`` and ``modsum`` (y_i = (x_i + x_{n-1-i}) mod vocab), whose
cross-entropy sits at chance for a while at the small lrs where bf16's lost updates show.
Batches are drawn afresh each step, so the training loss is a held-out loss.

Writes ``precision.png`` (smoothed loss curves, and each curve relative to fp32),
``precision.md`` and ``precision.json`` (final loss = mean over the last 5% of steps; mean
ms/step of ``optimizer.step()`` alone and of the whole iteration; bytes per param of the param
and the optimizer's state tensors as they are held) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fastopt

MODES: dict[str, tuple[torch.dtype, dict[str, Any]]] = {
    "fp32": (torch.float32, {}),
    "bf16": (torch.bfloat16, {}),
    "bf16+master": (torch.bfloat16, {"master_weights": True}),
    "bf16+stochastic": (torch.bfloat16, {"bf16_rounding": "stochastic", "rounding_seed": 0}),
    "bf16+kahan": (torch.bfloat16, {"kahan_summation": True}),
}
TASKS = ("teacher", "reverse", "sort", "modsum")
TAIL = 0.05  # final loss: mean over this last fraction of the steps


class TinyTransformer(nn.Module):
    """Token and learned position embeddings, pre-norm encoder layers, a linear head."""

    def __init__(self, vocab: int, seq_len: int, d_model: int, layers: int, heads: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) * 0.02)
        layer = nn.TransformerEncoderLayer(
            d_model, heads, 4 * d_model, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.encoder(self.tok(x) + self.pos)))


def make_batch(
    task: str, gen: torch.Generator, batch: int, seq_len: int, vocab: int, teacher: nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of random sequences and their targets: the teacher's log-probabilities, or the
    token map's classes."""
    x = torch.randint(0, vocab, (batch, seq_len), generator=gen)
    if task == "teacher":
        with torch.no_grad():
            y = teacher(x).log_softmax(-1)
    elif task == "reverse":
        y = x.flip(1)
    elif task == "sort":
        y = x.sort(1).values
    elif task == "modsum":
        y = (x + x.flip(1)) % vocab
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {TASKS}")
    return x, y


def lr_at(step: int, steps: int, peak: float, warmup: int) -> float:
    """Linear warmup to ``peak``, then cosine decay to 0 at ``steps``."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * 0.5 * (1.0 + math.cos(math.pi * t))


def bytes_per_param(model: nn.Module, opt: torch.optim.Optimizer) -> float:
    """Bytes of the params and every state tensor the optimizer holds, per param element."""
    params = list(model.parameters())
    total = sum(p.numel() * p.element_size() for p in params)
    for p in params:
        for value in opt.state[p].values():
            if torch.is_tensor(value):
                total += value.numel() * value.element_size()
    return total / sum(p.numel() for p in params)


def loss_fn(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KL(teacher || model) for log-probability targets, else cross-entropy; in float32 in every
    mode, so what differs between runs is the optimizer's store."""
    logp = logits.float().log_softmax(-1)
    if y.is_floating_point():
        return (y.exp() * (y - logp)).sum(-1).mean()
    return nn.functional.nll_loss(logp.reshape(-1, logp.shape[-1]), y.reshape(-1))


def train(
    mode: str, init: dict[str, torch.Tensor], teacher: nn.Module, args: argparse.Namespace
) -> dict[str, Any]:
    """One run of ``mode``: per-step losses, timings and the optimizer's bytes per param."""
    dtype, precision = MODES[mode]
    model = TinyTransformer(args.vocab, args.seq_len, args.d_model, args.layers, args.heads)
    model.load_state_dict(init)
    model.to(dtype)
    opt = fastopt.FusedAdamW(
        model.parameters(),
        lr=args.lr,
        weight_decay=args.weight_decay,
        state_dtype=torch.float32 if args.state_dtype == "float32" else "param",
        **precision,
    )
    gen = torch.Generator().manual_seed(args.seed + 1)  # the same batches in every run
    warmup = max(1, int(args.warmup * args.steps))
    losses, step_s, iter_s = [], [], []
    for step in range(args.steps):
        x, y = make_batch(args.task, gen, args.batch, args.seq_len, args.vocab, teacher)
        t0 = time.perf_counter()  # the iteration: lr, forward, backward, step (not the data)
        for group in opt.param_groups:
            group["lr"] = lr_at(step, args.steps, args.lr, warmup)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t1 = time.perf_counter()
        opt.step()
        t2 = time.perf_counter()
        losses.append(loss.item())
        step_s.append(t2 - t1)
        iter_s.append(time.perf_counter() - t0)
    tail = max(1, int(TAIL * args.steps))
    skip = min(len(iter_s) - 1, max(1, args.steps // 50))  # first steps allocate the states
    return {
        "mode": mode,
        "losses": [float(f"{v:.5g}") for v in losses],
        "final_loss": sum(losses[-tail:]) / tail,
        "step_ms": 1e3 * statistics.fmean(step_s[skip:]),
        "iter_ms": 1e3 * statistics.fmean(iter_s[skip:]),
        # medians too: on a shared machine other jobs' bursts inflate the means
        "step_ms_median": 1e3 * statistics.median(step_s[skip:]),
        "iter_ms_median": 1e3 * statistics.median(iter_s[skip:]),
        "bytes_per_param": bytes_per_param(model, opt),
        "state_keys": sorted(opt.state[next(model.parameters())]),
    }


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what there is)."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, len(runs[0]["losses"]) // 40)
    curves = {r["mode"]: smooth(r["losses"], window) for r in runs}
    ref = curves["fp32"]
    fig, (ax, rel) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, curve in curves.items():
        steps = range(1, len(curve) + 1)
        # fp32 on top, thin: the modes that match it would hide it
        style: dict[str, Any] = dict(lw=1.8)
        if mode == "fp32":
            style = dict(lw=1.0, ls="--", color="black", zorder=5)
        ax.plot(steps, curve, label=mode, **style)
        rel.plot(steps, [c / r for c, r in zip(curve, ref)], label=mode, **style)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving average of {window} steps)")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    rel.set_xlabel("step")
    rel.set_ylabel("loss / fp32 loss")
    rel.set_yscale("log")
    rel.grid(True, which="both", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def table(runs: list[dict[str, Any]]) -> str:
    ref = next(r for r in runs if r["mode"] == "fp32")["final_loss"]
    lines = [
        "| mode | final loss | vs fp32 | optimizer step ms, mean (median) "
        "| iteration ms, mean (median) | bytes/param |",
        "|:---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        lines.append(
            f"| {r['mode']} | {r['final_loss']:.4g} | {r['final_loss'] / ref:.3f}× "
            f"| {r['step_ms']:.2f} ({r['step_ms_median']:.2f}) "
            f"| {r['iter_ms']:.2f} ({r['iter_ms_median']:.2f}) | {r['bytes_per_param']:.2f} |"
        )
    return "\n".join(lines)


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--out", type=Path, default=Path("bench/results"))
    p.add_argument("--task", choices=TASKS, default="teacher")
    p.add_argument("--teacher-scale", type=float, default=4.0, help="multiplies its logits")
    p.add_argument("--vocab", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=16)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-4, help="peak lr")
    p.add_argument("--warmup", type=float, default=0.05, help="fraction of steps")
    p.add_argument("--weight-decay", type=float, default=0.01)
    p.add_argument(
        "--state-dtype", choices=("float32", "param"), default="float32", help="of Adam's states"
    )
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    if "fp32" not in args.modes:
        args.modes = ["fp32", *args.modes]  # the reference of the relative columns
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    shape = (args.vocab, args.seq_len, args.d_model, args.layers, args.heads)
    init = TinyTransformer(*shape).state_dict()
    teacher = TinyTransformer(*shape).requires_grad_(False)  # next draws of the same seed
    teacher.head.weight.mul_(args.teacher_scale)
    teacher.head.bias.mul_(args.teacher_scale)
    runs = []
    for mode in args.modes:
        t0 = time.perf_counter()
        runs.append(train(mode, init, teacher, args))
        r = runs[-1]
        print(
            f"{mode:16s} final loss {r['final_loss']:.4g}  step {r['step_ms']:.2f} ms  "
            f"iteration {r['iter_ms']:.2f} ms  {r['bytes_per_param']:.2f} B/param  "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
    n_params = sum(t.numel() for t in init.values())
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    setting = (
        f"{args.task}, vocab {args.vocab}, length {args.seq_len}, d_model {args.d_model}, "
        f"{args.layers} layers, {n_params} params, batch {args.batch}, FusedAdamW lr "
        f"{args.lr:g} (warmup {args.warmup:g}, cosine), {args.steps} steps"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    plot(runs, args.out / "precision.png", setting)
    command = "python bench/precision.py " + " ".join(sys.argv[1:] if argv is None else argv)
    md = (
        f"# Precision modes: {setting}\n\n`{command.strip()}` — {platform.machine()}, "
        f"{args.threads} torch threads, torch {torch.__version__}\n\n{table(runs)}\n\n"
        f"Final loss: mean training loss (fresh batches) over the last {TAIL:.0%} of steps. "
        "Step times: after the first 2% of steps; the iteration is lr update, forward, loss, "
        "backward and step (not the batch and teacher targets). Bytes/param: the param and "
        "every tensor in the optimizer's state, as held.\n"
    )
    (args.out / "precision.md").write_text(md)
    result = {"config": config, "setting": setting, "n_params": n_params, "runs": runs}
    (args.out / "precision.json").write_text(json.dumps(result, separators=(",", ":")) + "\n")
    print(table(runs))
    return result


if __name__ == "__main__":
    main()
