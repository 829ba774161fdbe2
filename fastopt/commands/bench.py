"""``fastopt bench``: fastopt's fused optimizers against torch.optim, measured in one run.

Every comparison times its candidates round-robin in the same process (fastopt, torch's
for-loop, foreach and fused implementations, and a same-bytes ``a.add_(b)`` bandwidth
reference; a ``dst.copy_(src)`` on CUDA) and reports medians, fastopt's speed-up over each
torch implementation, and the achieved bandwidth as a fraction of the reference's.
``--train-loop`` adds whole training iterations of small models, ``--pipeline`` the
clip + step and AMP unscale + clip + step updates. ``--quick`` is a check in seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from fastopt.catalog import CATALOG, PEER_IMPLS

HELP = "benchmark the fused optimizers against torch.optim (step, training loop, pipeline)"

# kept in sync with fastopt.benchmark (not imported here: building the parser stays cheap)
SET_NAMES = ("resnet50", "resnet50-paramwise", "gpt2", "mixed2000", "tiny2000")
OPTIM_NAMES = tuple(o.bench_name for o in CATALOG)
DTYPE_NAMES = ("fp32", "bf16", "fp16", "bf16-fp32states")
DEFAULT_DTYPES = DTYPE_NAMES[:2]
TORCH_IMPLS = PEER_IMPLS

#: what an option is when neither it nor ``--quick`` sets it
DEFAULTS: dict[str, Any] = {"repeat": 20, "warmup": 2, "sample_ms": 5.0, "scale": 1.0}
#: ``--quick``: every optimizer, dtype and peer in seconds, on the two ways a model's params
#: come (one group: GPT-2's 148 tensors; one group per param: ResNet-50 as MMEngine's paramwise
#: constructor makes it) at 1/1000 of their size, so the figures are per-step host overheads.
#: The 2000-tensor sets are left out: torch's for-loop and foreach take 20-120 ms a step there.
QUICK: dict[str, Any] = {"set": ["gpt2", "resnet50-paramwise"], "scale": 0.001, "repeat": 3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        nargs="+",
        choices=SET_NAMES,
        metavar="SET",
        help=f"parameter sets (default: all): {', '.join(SET_NAMES)}",
    )
    parser.add_argument(
        "--optim",
        nargs="+",
        choices=OPTIM_NAMES,
        metavar="OPTIM",
        help=f"optimizers (default: all): {', '.join(OPTIM_NAMES)}",
    )
    parser.add_argument(
        "--dtype",
        nargs="+",
        choices=DTYPE_NAMES,
        metavar="DTYPE",
        help="fp32; bf16 or fp16 (params, grads and states of that dtype); bf16-fp32states "
        "(fastopt keeps float32 states, torch's peers bf16 ones) (default: fp32 bf16)",
    )
    parser.add_argument(
        "--impl",
        nargs="+",
        choices=TORCH_IMPLS,
        default=list(TORCH_IMPLS),
        metavar="IMPL",
        help="torch implementations to compare with (default: for-loop foreach fused)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a check in seconds: --set "
        f"{' '.join(QUICK['set'])} --scale {QUICK['scale']} --repeat {QUICK['repeat']} "
        "(options given explicitly win)",
    )
    parser.add_argument(
        "--repeat", type=int, metavar="N", help=f"timed rounds (default: {DEFAULTS['repeat']})"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        metavar="N",
        help=f"untimed rounds first (default: {DEFAULTS['warmup']})",
    )
    parser.add_argument(
        "--sample-ms",
        type=float,
        metavar="MS",
        help="a timed sample repeats a step until it lasts MS milliseconds "
        f"(default: {DEFAULTS['sample_ms']:g})",
    )
    parser.add_argument(
        "--scale",
        type=float,
        metavar="F",
        help="shrink every tensor to F times its size, for a quick check "
        f"(default: {DEFAULTS['scale']:g})",
    )
    parser.add_argument("--threads", type=int, metavar="N", help="torch.set_num_threads(N)")
    parser.add_argument("--seed", type=int, default=0, help="seed of params, grads and data")
    parser.add_argument(
        "--train-loop",
        action="store_true",
        help="also time forward + backward + step of a small CNN and transformer",
    )
    parser.add_argument(
        "--pipeline",
        action="store_true",
        help="also time clip + step and AMP unscale + clip + step "
        "(sets: gpt2 mixed2000 unless --set; optim: adamw unless --optim)",
    )
    parser.add_argument(
        "--states8",
        action="store_true",
        help="only: AdamW with 8-bit states against float32 states (and bitsandbytes' "
        "AdamW8bit where it runs): bytes of state per param and step time (set: gpt2 unless "
        "--set)",
    )
    parser.add_argument("--no-step", action="store_true", help="skip the optimizer-step comparison")
    parser.add_argument("--json", metavar="PATH", help="also write every figure to PATH as JSON")
    parser.add_argument(
        "--markdown", action="store_true", help="print markdown tables (for the README)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def resolve(args: argparse.Namespace) -> argparse.Namespace:
    """Fill the options left unset: from :data:`QUICK` under ``--quick``, else :data:`DEFAULTS`."""
    preset = QUICK if args.quick else {}
    for key in (*DEFAULTS, "set", "dtype"):
        if getattr(args, key) is None:
            setattr(args, key, preset.get(key, DEFAULTS.get(key)))
    return args


def _check(args: argparse.Namespace) -> str | None:
    if args.repeat < 1:
        return "--repeat must be at least 1"
    if args.warmup < 0:
        return "--warmup must not be negative"
    if args.sample_ms < 0:
        return "--sample-ms must not be negative"
    if not args.scale > 0:
        return "--scale must be positive"
    if args.no_step and not (args.train_loop or args.pipeline):
        return "--no-step leaves nothing to run: add --train-loop or --pipeline"
    return None


def _run_states8(args: argparse.Namespace, progress: Any) -> int:
    import json

    from fastopt.benchmark import report
    from fastopt.benchmark.states8 import run_states8, table

    results = run_states8(
        list(args.set or ["gpt2"]),
        device=args.device,
        repeat=args.repeat,
        warmup=args.warmup,
        scale=args.scale,
        seed=args.seed,
        min_sample_s=args.sample_ms / 1e3,
        progress=progress,
    )
    print(table(results))
    if args.json:
        env = report.environment(args.device)
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": [r.to_dict() for r in results]}, f, indent=1)
        progress(f"wrote {args.json}")
    return 1 if any("fastopt 8bit" in r.errors for r in results) else 0


def run(args: argparse.Namespace) -> int:
    error = _check(resolve(args))
    if error:
        print(f"fastopt bench: {error}", file=sys.stderr)
        return 2

    import torch

    from fastopt.benchmark import report
    from fastopt.benchmark.pipeline import DEFAULT_SETS, PIPELINES, run_pipeline_benchmarks
    from fastopt.benchmark.step import Comparison, run_step_benchmarks
    from fastopt.benchmark.timing import load_average
    from fastopt.benchmark.train_loop import MODELS, LoopResult, run_train_loop_benchmarks

    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("fastopt bench: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)

    def progress(msg: str) -> None:
        if not args.quiet:
            print(f"  {msg}", file=sys.stderr, flush=True)

    if args.states8:
        return _run_states8(args, progress)

    sets = list(args.set or SET_NAMES)
    optims = list(args.optim or OPTIM_NAMES)
    dtypes = list(args.dtype or DEFAULT_DTYPES)
    common: dict[str, Any] = dict(
        device=device, repeat=args.repeat, warmup=args.warmup, scale=args.scale, seed=args.seed
    )
    meta: dict[str, Any] = {
        "command": "fastopt " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None,
        "environment": report.environment(device),
        "repeat": args.repeat,
        "warmup": args.warmup,
        "scale": args.scale,
        "sample_ms": args.sample_ms,
        "seed": args.seed,
        "load_average": {"before": load_average()},
    }
    t0 = time.perf_counter()
    step: list[Comparison] = []
    loop: list[LoopResult] = []
    pipe: list[Comparison] = []
    sample_s = args.sample_ms / 1e3
    if not args.no_step:
        step = run_step_benchmarks(
            sets,
            optims,
            dtypes,
            impls=["fastopt", *args.impl],
            min_sample_s=sample_s,
            progress=progress,
            **common,
        )
    if args.train_loop:
        loop = run_train_loop_benchmarks(
            MODELS, list(args.optim or ("sgd", "adamw")), progress=progress, **common
        )
    if args.pipeline:
        pipe = run_pipeline_benchmarks(
            list(args.set or DEFAULT_SETS),
            list(args.optim or ("adamw",)),
            dtypes,
            PIPELINES,
            min_sample_s=sample_s,
            progress=progress,
            **common,
        )
    meta["load_average"]["after"] = load_average()
    meta["seconds"] = round(time.perf_counter() - t0, 1)

    cpus = meta["environment"]["cpu_count"]
    tables = [
        report.step_table(step, cpus),
        report.loop_table(loop, cpus),
        report.pipeline_table(pipe, cpus),
    ]
    line = report.meta_line(meta)
    warning = report.load_warning(meta, tables)
    meta["load_warning"] = warning
    if args.markdown:
        print(report.render_markdown(tables, line, warning))
    else:
        report.print_tables(tables, line, warning)
    if warning:  # also where it is seen when stdout goes to a file
        print(f"fastopt bench: {warning}", file=sys.stderr)
    if args.json:
        report.write_json(args.json, report.to_json(meta, step, loop, pipe))
        progress(f"wrote {args.json}")
    failed = [c for c in (*step, *pipe) if "fastopt" in c.errors]
    failed += [r for r in loop if "fastopt" in r.errors]
    return 1 if failed else 0
