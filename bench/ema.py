"""The EMA update of an averaged model per iteration: fastopt's one engine pass against the
per-tensor loop and torch's foreach, on ResNet-50 and GPT-2 parameter shapes.

    flock /tmp/cpu.lock python bench/ema.py [--sets resnet50 gpt2] [--dtypes fp32 bf16]
        [--device cpu] [--repeat 15] [--out bench/results]

Candidates, timed round-robin in the same run (``fastopt.benchmark.timing``):

- ``per-tensor``: ``mmengine.model.ExponentialMovingAverage.update_parameters`` (one
  ``lerp_`` per tensor in a Python loop, what ``EMAHook`` runs under MMEngine);
- ``foreach``: ``torch.optim.swa_utils.get_ema_multi_avg_fn``'s update on the tensor lists
  (``torch._foreach_lerp_``; the lists built once, outside the timing);
- ``fastopt``: ``fastopt.model.ExponentialMovingAverage.update_parameters`` (one engine pass,
  with its per-call Python checks);
- ``add_`` (CPU) / ``copy_`` (CUDA): a streaming kernel moving the same bytes as one EMA
  update (read the average and the source, write the average), the bandwidth it is held to.

Writes ``ema-<device>.md`` and ``ema-<device>.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastopt.benchmark.param_sets import get_set  # noqa: E402
from fastopt.benchmark.timing import (  # noqa: E402
    load_average,
    stream_reference,
    synchronizer,
    time_interleaved,
)
from fastopt.model.averaged_model import ExponentialMovingAverage  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
MOMENTUM = 2e-4  # RTMDet's EMAHook momentum


def _model(set_name: str, dtype: torch.dtype, device: str) -> nn.Module:
    model = nn.Module()
    gen = torch.Generator().manual_seed(0)
    for i, (_, shape) in enumerate(get_set(set_name).shapes):
        t = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
        model.register_parameter(f"p{i}", nn.Parameter(t))
    return model


def measure(set_name: str, dtype_name: str, device: str, repeat: int) -> dict[str, Any]:
    from mmengine.model import ExponentialMovingAverage as MMEngineEMA
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    dtype = DTYPES[dtype_name]
    model = _model(set_name, dtype, device)
    ours = ExponentialMovingAverage(model, momentum=MOMENTUM)
    theirs = MMEngineEMA(model, momentum=MOMENTUM)
    foreach_avg = [p.detach().clone() for p in model.parameters()]
    sources = [p.detach() for p in model.parameters()]
    foreach_fn = get_ema_multi_avg_fn(1 - MOMENTUM)
    for avg in (ours, theirs):  # past the first call (a copy)
        avg.update_parameters(model)
    numel = sum(p.numel() for p in model.parameters())
    nbytes = 3 * numel * dtype.itemsize  # read avg and source, write avg
    stream, stream_bytes, stream_label = stream_reference(nbytes, device)
    candidates = {
        "per-tensor": lambda: theirs.update_parameters(model),
        "foreach": lambda: foreach_fn(foreach_avg, sources, None),
        "fastopt": lambda: ours.update_parameters(model),
        stream_label: stream,
    }
    stats, errors = time_interleaved(candidates, repeat=repeat, sync=synchronizer(device))
    if errors:
        raise RuntimeError(f"{set_name} {dtype_name}: {errors}")
    ms = {name: s.median * 1e3 for name, s in stats.items()}
    stream_gbs = stream_bytes / (ms[stream_label] * 1e-3) / 1e9
    fused_gbs = nbytes / (ms["fastopt"] * 1e-3) / 1e9
    return {
        "set": set_name,
        "dtype": dtype_name,
        "device": device,
        "tensors": len(sources),
        "numel": numel,
        "bytes": nbytes,
        "ms": ms,
        "iqr_ms": {name: s.iqr * 1e3 for name, s in stats.items()},
        "speedup_vs_per_tensor": ms["per-tensor"] / ms["fastopt"],
        "speedup_vs_foreach": ms["foreach"] / ms["fastopt"],
        "fastopt_gbs": fused_gbs,
        "stream": stream_label,
        "stream_gbs": stream_gbs,
        "bandwidth_ratio": fused_gbs / stream_gbs,
        "backend": ours.__dict__["_tables"].full.backend,
    }


def _markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    stream = rows[0]["stream"] if rows else "add_"
    lines = [
        f"# EMA update per iteration ({meta['device']}, {meta['threads']} threads)",
        "",
        f"Median ms of one update (momentum {MOMENTUM}); load average {meta['load']}; "
        f"command: `{meta['command']}`.",
        "",
        f"| set | dtype | tensors | MB moved | per-tensor | foreach | fastopt | {stream} | "
        f"× per-tensor | × foreach | fastopt GB/s | of {stream} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ms = r["ms"]
        lines.append(
            f"| {r['set']} | {r['dtype']} | {r['tensors']} | {r['bytes'] / 1e6:.0f} | "
            f"{ms['per-tensor']:.2f} | {ms['foreach']:.2f} | {ms['fastopt']:.2f} | "
            f"{ms[r['stream']]:.2f} | {r['speedup_vs_per_tensor']:.2f} | "
            f"{r['speedup_vs_foreach']:.2f} | {r['fastopt_gbs']:.1f} | "
            f"{r['bandwidth_ratio']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", nargs="+", default=["resnet50", "gpt2"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    rows = [measure(s, d, args.device, args.repeat) for s in args.sets for d in args.dtypes]
    load = load_average()
    meta = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "load": "n/a" if load is None else ", ".join(f"{x:.2f}" for x in load),
        "command": "python bench/ema.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "torch": torch.__version__,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"ema-{args.device.split(':')[0]}"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    text = _markdown(rows, meta)
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0 if all(math.isfinite(r["ms"]["fastopt"]) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
