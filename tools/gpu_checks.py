#!/usr/bin/env python3
"""Checks and figures of the CUDA engine on a GPU that the test suite does not give.

Run by tools/gpu_check.py (stage ``checks``), or alone: ``python tools/gpu_checks.py --json
out.json``. Each check prints one line and adds a record (name, ok, figures) to the JSON; a
check that raises is a failed record, and the others still run.

* no_host_sync: with the stream kept busy by ``torch.cuda._sleep``, a step (plain and through
  the gradient pipeline) returns while the stream is still busy, so nothing waited for the
  device (torch's sync-debug mode only sees torch's own calls, not the engine's runtime);
* launches: kernel launches per step seen by the profiler (CUPTI) for GPT-2 and ResNet-50
  paramwise shapes, against the engine's own launch records and torch's fused and foreach;
* bandwidth: ms per step and GB/s as a fraction of a 4 GB ``copy_`` in the same process, and
  the speed-ups over torch fused and foreach;
* misaligned / bf16: misaligned views give the aligned results bit for bit; bf16 steps on the
  GPU against the CPU engine;
* graph: a captured pipeline step replayed with new grads, an lr tensor and an inf step that
  is skipped on the device, against eager steps;
* variants: the launch variants of a FASTOPT_CUDA_VARIANTS build, timed against the default;
* llama7b: a 7B-parameter step time extrapolated from a two-layer slice of LLaMA-7B's shapes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastopt  # noqa: E402
from fastopt import _C  # noqa: E402
from fastopt.benchmark.param_sets import make_params  # noqa: E402

DEV = torch.device("cuda", 0)
CHECKS: list[tuple[str, Callable[[], dict[str, Any]]]] = []


def check(fn: Callable[[], dict[str, Any]]) -> Callable[[], dict[str, Any]]:
    CHECKS.append((fn.__name__, fn))
    return fn


def timed(step: Callable[[], None], repeat: int = 20, warmup: int = 3) -> float:
    """Median milliseconds of one call, by CUDA events."""
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def model(set_name: str, dtype: str = "fp32", scale: float = 1.0):
    return make_params(set_name, dtype=dtype, device="cuda", scale=scale)


def fresh(ps):
    """Leaf copies of a Params' tensors with their grads (a second optimizer's own)."""
    out = []
    for t in ps.tensors:
        c = t.detach().clone().requires_grad_(True)
        c.grad = t.grad.clone()
        out.append(c)
    return out


def groups_like(ps, tensors):
    """ps's param groups (one per param for paramwise sets) over other tensors."""
    by_id = {id(a): b for a, b in zip(ps.tensors, tensors)}
    return [{**g, "params": [by_id[id(p)] for p in g["params"]]} for g in ps.param_groups()]


def optimizers(ps, which=("fastopt", "fused", "foreach"), lr=1e-3):
    out = {}
    for name in which:
        tensors = fresh(ps)
        groups = groups_like(ps, tensors)
        if name == "fastopt":
            out[name] = (fastopt.FusedAdamW(groups, lr=lr, weight_decay=0.01), tensors)
        else:
            kw = {name: True}
            out[name] = (torch.optim.AdamW(groups, lr=lr, weight_decay=0.01, **kw), tensors)
    return out


# ---- checks -----------------------------------------------------------------------------------


@check
def no_host_sync() -> dict[str, Any]:
    ps = model("gpt2", scale=0.25)
    opt = fastopt.FusedAdamW(fresh(ps), lr=1e-3)
    found, norm = torch.zeros((), device=DEV), torch.zeros((), device=DEV)
    stream = torch.cuda.current_stream()
    figures = {}
    for label, step in (
        ("step", lambda: opt.step()),
        ("pipeline", lambda: opt.fused_step(max_norm=1.0, found_inf=found, norm_out=norm)),
    ):
        step()  # the plan is built outside the measured calls
        torch.cuda.synchronize()
        busy = 0
        for _ in range(5):
            torch.cuda._sleep(100_000_000)  # tens of ms of device time
            torch.cuda.set_sync_debug_mode("error")  # and torch's own syncs raise
            try:
                start = time.perf_counter()
                step()
                host_ms = (time.perf_counter() - start) * 1e3
            finally:
                torch.cuda.set_sync_debug_mode("default")
            busy += not stream.query()
            torch.cuda.synchronize()
        figures[label] = {"busy_after_return": f"{busy}/5", "host_ms": round(host_ms, 3)}
        figures[f"{label}_ok"] = busy == 5
    return {"ok": figures["step_ok"] and figures["pipeline_ok"], **figures}


def kernels_per_step(step: Callable[[], None], steps: int = 3) -> float:
    from torch.profiler import ProfilerActivity, profile

    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    names = [
        e.name
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and not e.name.startswith(("Memcpy", "Memset"))
    ]
    return len(names) / steps


@check
def launches() -> dict[str, Any]:
    figures: dict[str, Any] = {}
    ok = True
    for set_name in ("gpt2", "resnet50-paramwise"):
        ps = model(set_name)
        row: dict[str, Any] = {}
        for name, (opt, _) in optimizers(ps).items():
            row[name] = kernels_per_step(opt.step)
            if name == "fastopt":
                records = opt._plan.engine.launches()
                row["fastopt_predicted"] = len(records)
                row["fastopt_param_kb_per_step"] = round(
                    sum(r["param_bytes"] for r in records) / 1024, 1
                )
        ok &= row["fastopt"] == row["fastopt_predicted"] and row["fastopt"] <= row["fused"]
        figures[set_name] = row
        del ps
        torch.cuda.empty_cache()
    return {"ok": ok, **figures}


def copy_gbps() -> float:
    n = 2**30  # 4 GB of float32 each way
    src = torch.empty(n, dtype=torch.float32, device=DEV).fill_(1.0)
    dst = torch.empty_like(src)
    ms = timed(functools.partial(dst.copy_, src), repeat=10)
    return 2 * n * 4 / ms / 1e6  # bytes read + written


@check
def bandwidth() -> dict[str, Any]:
    copy = copy_gbps()
    torch.cuda.empty_cache()
    figures: dict[str, Any] = {"copy_4gb_gbps": round(copy, 1)}
    for dtype, per_elem in (("fp32", 28), ("bf16-fp32states", 20)):
        # AdamW reads param, grad and two states and writes three: fp32 28 bytes per element;
        # bf16 params and grads with fp32 states 4 + 4 + 8 + 4 (master-free)
        ps = model("gpt2", dtype=dtype)
        row: dict[str, Any] = {}
        which = ("fastopt",) if dtype != "fp32" else ("fastopt", "fused", "foreach")
        for name, (opt, _) in optimizers(ps, which).items():
            row[f"{name}_ms"] = round(timed(opt.step), 3)
        gbps = ps.numel * per_elem / row["fastopt_ms"] / 1e6
        row["fastopt_gbps"] = round(gbps, 1)
        row["fraction_of_copy"] = round(gbps / copy, 3)
        for peer in ("fused", "foreach"):
            if f"{peer}_ms" in row:
                row[f"speedup_over_{peer}"] = round(row[f"{peer}_ms"] / row["fastopt_ms"], 2)
        figures[f"gpt2_{dtype}"] = row
        del ps
        torch.cuda.empty_cache()
    return {"ok": figures["gpt2_fp32"]["fraction_of_copy"] > 0.5, **figures}


def _steps(params, steps=3, **kw):
    opt = fastopt.FusedAdamW(params, lr=0.125, weight_decay=0.5)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=g).to(p.dtype).to(p.device)
        opt.step(**kw)
    return opt


@check
def misaligned_and_bf16() -> dict[str, Any]:
    shapes = [(70_001,), (4099,), (3,), (65536 * 2 + 5,)]
    base = [torch.randn(s, generator=torch.Generator().manual_seed(0)) for s in shapes]

    def leaf(t, misaligned=False, device=DEV, dtype=torch.float32):
        t = t.to(dtype)
        buf = torch.empty(t.numel() + 1, dtype=dtype, device=device)
        view = (buf[1:] if misaligned else buf[: t.numel()]).view(t.shape)
        return torch.nn.Parameter(view.copy_(t))

    aligned = [leaf(t) for t in base]
    shifted = [leaf(t, misaligned=True) for t in base]
    _steps(aligned)
    opt = _steps(shifted)
    scalar = sum(
        r["scalar_chunks"] for r in opt._plan.engine.launches() if r["kernel"].startswith("update")
    )
    same = all(torch.equal(a.detach(), b.detach()) for a, b in zip(aligned, shifted))
    gpu = [leaf(t, dtype=torch.bfloat16) for t in base]
    cpu = [leaf(t, device=torch.device("cpu"), dtype=torch.bfloat16) for t in base]
    _steps(gpu)
    _steps(cpu)
    ulp = 0
    equal = 0
    total = 0
    for a, b in zip(gpu, cpu):
        x = a.detach().cpu().view(torch.int16).int()
        y = b.detach().view(torch.int16).int()
        ulp = max(ulp, int((x - y).abs().max()))
        equal += int((x == y).sum())
        total += x.numel()
    return {
        "ok": same and scalar > 0 and ulp <= 1,
        "misaligned_bitwise_equal": same,
        "scalar_chunks": scalar,
        "bf16_gpu_vs_cpu_max_ulp": ulp,
        "bf16_bitwise_equal_fraction": round(equal / total, 6),
    }


@check
def graph() -> dict[str, Any]:
    shapes = [(4099,), (70_001,), (7, 3)]
    g = torch.Generator().manual_seed(0)
    init = [torch.randn(s, generator=g) for s in shapes]
    grad_seq = [[torch.randn(s, generator=g) for s in shapes] for _ in range(6)]
    grad_seq[3][1][7] = math.inf  # replay 3 is skipped
    lrs = [0.01, 0.02, 0.005, 0.005, 0.001, 0.01]

    def build():
        params = [torch.nn.Parameter(t.to(DEV)) for t in init]
        lr = torch.tensor(0.01, device=DEV)
        opt = fastopt.FusedAdamW(params, lr=lr, capturable=True)
        return params, opt, lr

    # eager: a warm-up step with grads 0, then the sequence
    params_e, opt_e, lr_e = build()
    found_e = torch.zeros((), device=DEV)
    for step, grads in enumerate([grad_seq[0]] + grad_seq):
        lr_e.fill_(lrs[step - 1] if step else 0.01)
        for p, gi in zip(params_e, grads):
            p.grad = gi.to(DEV)
        opt_e.fused_step(max_norm=1.0, found_inf=found_e)

    params, opt, lr = build()
    found = torch.zeros((), device=DEV)
    static = [gi.to(DEV) for gi in grad_seq[0]]
    for p, s in zip(params, static):
        p.grad = s
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        opt.fused_step(max_norm=1.0, found_inf=found)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        opt.fused_step(max_norm=1.0, found_inf=found)
    skipped = None
    for i, grads in enumerate(grad_seq):
        for s, gi in zip(static, grads):
            s.copy_(gi)
        lr.fill_(lrs[i])
        before = params[0].detach().clone()
        graph.replay()
        if i == 3:
            torch.cuda.synchronize()
            skipped = found.item() == 1.0 and torch.equal(before, params[0].detach())
    torch.cuda.synchronize()
    diff = max((a - b).abs().max().item() for a, b in zip(params, params_e))
    steps = opt.state[params[0]]["step"].item()
    return {
        "ok": bool(skipped) and diff <= 1e-6 and steps == 6,
        "inf_replay_skipped": skipped,
        "max_diff_vs_eager": diff,
        "step_count": steps,
    }


@check
def variants() -> dict[str, Any]:
    built = _C.cuda_variants_built()
    options: list[tuple[str, dict[str, int]]] = [("default", {})]
    for threads, blocks in built["update_bounds"][1:]:
        options.append(
            (f"bounds_{threads}x{blocks}", dict(update_threads=threads, update_min_blocks=blocks))
        )
    if built["table_tiers"] > 1:
        options.append(("tiered_tables", dict(tiered=1)))
    options.append(("two_level_combine_256", dict(combine_segment=256)))
    figures: dict[str, Any] = {"built": built}
    reference = {}
    ok = True
    for set_name in ("gpt2", "resnet50-paramwise"):
        ps = model(set_name)
        row = {}
        for label, kw in options:
            _C.set_cuda_variants(**kw)
            try:
                opt, tensors = optimizers(ps, ("fastopt",))["fastopt"]
                plain = timed(opt.step)
                clipped = timed(functools.partial(opt.fused_step, max_norm=1.0))
            finally:
                _C.set_cuda_variants()
            row[label] = {"step_ms": round(plain, 3), "clip_step_ms": round(clipped, 3)}
            # the same number of steps from the same start: bounds and tiers change no bit
            result = [t.detach().clone() for t in tensors[:4]]
            if label == "default":
                reference[set_name] = result
            elif not label.startswith("two_level"):
                same = all(torch.equal(a, b) for a, b in zip(result, reference[set_name]))
                row[label]["bitwise_default"] = same
                ok &= same
        figures[set_name] = row
        del ps
        torch.cuda.empty_cache()
    return {"ok": ok, **figures}


LLAMA7B_LAYER = [(4096, 4096)] * 4 + [(11008, 4096)] * 2 + [(4096, 11008)] + [(4096,)] * 2
LLAMA7B_NUMEL = 32 * sum(math.prod(s) for s in LLAMA7B_LAYER) + 2 * 32000 * 4096 + 4096


@check
def llama7b() -> dict[str, Any]:
    shapes = LLAMA7B_LAYER * 2  # two of the 32 layers
    numel = sum(math.prod(s) for s in shapes)
    figures: dict[str, Any] = {"slice_params": numel, "model_params": LLAMA7B_NUMEL}
    for dtype in (torch.float32, torch.bfloat16):
        g = torch.Generator(device=DEV).manual_seed(0)
        row = {}
        for name in ("fastopt", "fused"):
            params = []
            for s in shapes:
                p = torch.nn.Parameter(torch.randn(s, device=DEV, generator=g).to(dtype))
                p.grad = torch.randn(s, device=DEV, generator=g).to(dtype)
                params.append(p)
            if name == "fastopt":
                opt = fastopt.FusedAdamW(params, lr=1e-4)  # states float32 (its default)
            else:
                opt = torch.optim.AdamW(params, lr=1e-4, fused=True)  # states in param dtype
            ms = timed(opt.step, repeat=10)
            row[f"{name}_slice_ms"] = round(ms, 3)
            row[f"{name}_7b_ms"] = round(ms * LLAMA7B_NUMEL / numel, 1)
            del opt, params
            torch.cuda.empty_cache()
        figures[str(dtype).split(".")[-1]] = row
    return {"ok": True, **figures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the records here")
    parser.add_argument("--only", nargs="+", help="these checks only")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_checks: no GPU (torch.cuda.is_available() is False)")
        return 2
    records = []
    for name, fn in CHECKS:
        if args.only and name not in args.only:
            continue
        start = time.monotonic()
        try:
            record = {"name": name, **fn()}
        except Exception as exc:
            record = {"name": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            traceback.print_exc()
        record["seconds"] = round(time.monotonic() - start, 1)
        records.append(record)
        print(f"{'ok    ' if record['ok'] else 'FAILED'} {name}: "
              f"{json.dumps({k: v for k, v in record.items() if k not in ('name', 'ok')})}",
              flush=True)  # fmt: skip
        torch.cuda.empty_cache()
    summary = {r["name"]: r["ok"] for r in records}
    data = {"gpu": torch.cuda.get_device_name(0), "checks": records, "summary": summary}
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2, default=str) + "\n")
    return 0 if all(summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
