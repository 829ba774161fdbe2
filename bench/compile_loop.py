"""A compiled training loop: fastopt's FusedAdamW against torch's fused AdamW, each eager and
under ``torch.compile``, timed round-robin in the same run.

    flock /tmp/cpu.lock python bench/compile_loop.py [--device cpu] [--repeat 10]
        [--steps-per-sample 4] [--out bench/results]

The model is the benchmark suite's small transformer language model
(``fastopt.benchmark.train_loop.build_model('transformer')``: 2 pre-norm layers, d=128, 16
sequences of 64 tokens). One iteration is ``zero_grad``, forward, loss, backward,
``optimizer.step()`` (the compiled candidates compile that whole function with the default
inductor backend), then an lr scheduler step outside it that changes the Python-float lr every
iteration, as training does. Each candidate is a copy of the same seeded model.

Reported per candidate: milliseconds per iteration (median and IQR of the samples), the frames
dynamo compiled in warm-up and the frames compiled during the timed iterations (recompilations:
torch's compiled optimizer guards on the float lr; fastopt's op does not read it), and the
warm-up (compile) time. Writes ``compile-loop-<device>.md`` and ``.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.testing import CompileCounterWithBackend
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastopt.benchmark.timing import load_average, synchronizer, time_interleaved  # noqa: E402
from fastopt.benchmark.train_loop import batch_size, build_model, make_batch  # noqa: E402
from fastopt.optim import FusedAdamW  # noqa: E402

HYPERS = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)


class Candidate:
    """One model copy, its optimizer and scheduler, and its (maybe compiled) iteration."""

    def __init__(
        self, base: torch.nn.Module, impl: str, compiled: bool, batch: Any, device: str
    ) -> None:
        self.model = copy.deepcopy(base).to(device).train()
        params = list(self.model.parameters())
        if impl == "fastopt":
            self.optimizer: torch.optim.Optimizer = FusedAdamW(params, **HYPERS)
        else:
            self.optimizer = torch.optim.AdamW(params, **HYPERS, fused=True)
        # a new Python-float lr every iteration (cosine-like decay, never repeating a value)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: 1.0 / (1.0 + 1e-3 * i)
        )
        self.batch = batch
        self.counter = CompileCounterWithBackend("inductor") if compiled else None
        self.step = torch.compile(self._step, backend=self.counter) if compiled else self._step

    def _step(self) -> torch.Tensor:
        x, y = self.batch
        self.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        loss.backward()
        self.optimizer.step()
        return loss

    def __call__(self) -> None:
        self.step()
        self.scheduler.step()

    @property
    def frames(self) -> int | None:
        return None if self.counter is None else self.counter.frame_count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--steps-per-sample", type=int, default=4)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    base = build_model("transformer")
    batch = make_batch("transformer", batch_size("transformer"), args.device)
    sync = synchronizer(args.device)
    candidates: dict[str, Candidate] = {}
    warmup: dict[str, dict[str, Any]] = {}
    for impl in ("fastopt", "torch-fused"):
        for compiled in (False, True):
            name = f"{impl} {'compiled' if compiled else 'eager'}"
            c = candidates[name] = Candidate(base, impl, compiled, batch, args.device)
            t0 = time.perf_counter()
            for _ in range(args.warmup_steps):
                c()
            if sync is not None:
                sync()
            warmup[name] = dict(seconds=time.perf_counter() - t0, frames=c.frames)
            print(f"{name}: warm-up {warmup[name]['seconds']:.1f} s, frames {c.frames}", flush=True)

    def run(c: Candidate) -> Any:
        def iterations() -> None:
            for _ in range(args.steps_per_sample):
                c()

        return iterations

    stats, errors = time_interleaved(
        {name: run(c) for name, c in candidates.items()},
        repeat=args.repeat,
        warmup=1,
        max_inner=1,
        sync=sync,
    )
    rows = []
    for name, c in candidates.items():
        if name not in stats:
            rows.append(dict(candidate=name, error=errors.get(name)))
            continue
        s = stats[name]
        per_iter = 1e3 / args.steps_per_sample
        frames = c.frames
        rows.append(
            dict(
                candidate=name,
                ms_per_iter=s.median * per_iter,
                iqr_ms=s.iqr * per_iter,
                warmup_s=warmup[name]["seconds"],
                warmup_frames=warmup[name]["frames"],
                recompiled_frames=None if frames is None else frames - warmup[name]["frames"],
                iterations=c.scheduler.last_epoch,
            )
        )
    meta = dict(
        torch=torch.__version__,
        device=args.device,
        threads=torch.get_num_threads(),
        load_1m_5m_15m=load_average(),
        repeat=args.repeat,
        steps_per_sample=args.steps_per_sample,
        cache_size_limit=torch._dynamo.config.recompile_limit,
    )
    base_ms = {r["candidate"]: r.get("ms_per_iter") for r in rows}
    lines = [
        f"# Compiled training loop, small transformer LM ({args.device}, torch {torch.__version__}, "
        f"{meta['threads']} threads, load {meta['load_1m_5m_15m']})",
        "",
        "| candidate | ms / iteration (median) | IQR | vs torch-fused eager | warm-up s | "
        "frames in warm-up | frames compiled while timed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    ref = base_ms.get("torch-fused eager")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['candidate']} | error: {r['error']} | | | | | |")
            continue
        rel = f"{ref / r['ms_per_iter']:.2f}x" if ref else "-"
        fmt = lambda v: "-" if v is None else str(v)  # noqa: E731
        lines.append(
            f"| {r['candidate']} | {r['ms_per_iter']:.2f} | {r['iqr_ms']:.2f} | {rel} | "
            f"{r['warmup_s']:.1f} | {fmt(r['warmup_frames'])} | {fmt(r['recompiled_frames'])} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"compile-loop-{args.device}.md").write_text(text)
    (args.out / f"compile-loop-{args.device}.json").write_text(
        json.dumps(dict(meta=meta, rows=rows), indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
