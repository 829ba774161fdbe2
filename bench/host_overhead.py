"""Host cost of a fused step over many tiny tensors, per tensor, and where it goes.

    flock /tmp/cpu.lock python bench/host_overhead.py [--tensors 1000] [--repeat 15]
        [--out bench/results]

Every scenario steps ``--tensors`` float32 tensors of 16 elements in one param group (the
update itself is a few nanoseconds per tensor: what is timed is the host's work around it), with
the grads as a training loop leaves them:

* ``fresh``: new grad tensors every step (``zero_grad(set_to_none=True)``, then backward
  allocates them; here each grad is a new clone);
* ``kept``: the same grad tensors every step (``zero_grad(set_to_none=False)``, then backward
  accumulates into them; here a ``_foreach_add_``);
* ``flat``: the grads are views of one flat buffer (DDP's ``gradient_as_bucket_view``, apex's
  contiguous grads), refilled in place.

Only ``optimizer.step()`` is timed (each step's grad setup is outside the clock). Each
scenario is timed on each path of the refresh's tensor reads (``_C.tensor_reads``: ``shim``,
torch's C shim, is what fastopt uses; ``accessors`` and ``methods`` are the earlier paths, kept
as fallbacks) and split into the refresh (the per-tensor checks, ``Plan.refresh``), the engine
call alone, and the Python around them. The
2000 x 16 comparison against torch's fused AdamW and SGD runs in the same process, interleaved.
Writes ``host-overhead-cpu.md`` and ``.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastopt._ext import require_C  # noqa: E402
from fastopt.benchmark.timing import load_average  # noqa: E402
from fastopt.optim import FusedAdamW, FusedSGD  # noqa: E402

NUMEL = 16
# the paths of the refresh's tensor reads (csrc/plan.cpp, ReadPath), as the table names them
PATHS = {
    "shim": "shim (C shim on the at::Tensor)",
    "accessors": "accessors (torch's C getters)",
    "methods": "methods (data_ptr() method)",
}
OPTIMIZERS: dict[str, tuple[type, type, dict[str, Any]]] = {
    "adamw": (FusedAdamW, torch.optim.AdamW, dict(lr=1e-3, weight_decay=0.01)),
    "sgd": (FusedSGD, torch.optim.SGD, dict(lr=1e-3, momentum=0.9)),
}


class Scenario:
    """Tiny params, their grads as one scenario leaves them, and one optimizer over them."""

    def __init__(self, n: int, grads: str, make: Callable[[list[torch.Tensor]], Any]) -> None:
        gen = torch.Generator().manual_seed(0)
        self.params = [torch.nn.Parameter(torch.randn(NUMEL, generator=gen)) for _ in range(n)]
        self.source = [torch.randn(NUMEL, generator=gen) * 1e-3 for _ in range(n)]
        self.grads = grads
        if grads == "flat":
            self.flat = torch.zeros(n * NUMEL)
            for i, p in enumerate(self.params):
                p.grad = self.flat[i * NUMEL : (i + 1) * NUMEL].view_as(p)
            self.flat_source = torch.cat(self.source)
        else:
            for p, g in zip(self.params, self.source):
                p.grad = g.clone()
        self.optimizer = make(self.params)
        self.optimizer.step()  # builds the plan (fastopt) and the states

    def setup(self) -> None:
        """The grads of the next step, as a training loop would leave them."""
        if self.grads == "fresh":
            self.optimizer.zero_grad(set_to_none=True)
            for p, g in zip(self.params, self.source):
                p.grad = g.clone()
        elif self.grads == "kept":
            self.optimizer.zero_grad(set_to_none=False)
            torch._foreach_add_([p.grad for p in self.params], self.source)
        else:
            self.flat.copy_(self.flat_source)


def time_step(
    s: Scenario | None, fn: Callable[[], Any], calls: int, pre: Callable[[], Any] | None = None
) -> float:
    """Seconds per call of ``fn`` (a step), each call after an untimed ``s.setup()`` (none:
    back-to-back steps) and ``pre()``."""
    total = 0
    for _ in range(calls):
        if s is not None:
            s.setup()
        if pre is not None:
            pre()
        t0 = time.perf_counter_ns()
        fn()
        total += time.perf_counter_ns() - t0
    return total / calls / 1e9


Case = tuple[Scenario | None, Callable[[], Any], Callable[[], Any] | None, Callable[[], Any] | None]


def interleaved(cases: dict[str, Case], repeat: int, calls: int) -> dict[str, list[float]]:
    """Round-robin samples (seconds per step) of each case: (scenario whose setup precedes each
    call, or None; the timed call; what runs before each sample, if anything (it switches the
    path of tensor reads and rebuilds the plan); what runs untimed before each call, if anything)."""
    samples: dict[str, list[float]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(repeat + 1):  # round 0: warm-up, not recorded
        k = r % len(names)
        for name in names[k:] + names[:k]:
            scenario, fn, before, pre = cases[name]
            if before is not None:
                before()
            t = time_step(scenario, fn, calls, pre)
            if r:
                samples[name].append(t)
    return samples


def profile_text(s: Scenario, steps: int) -> str:
    """cProfile of ``steps`` steps of a scenario (setup excluded), the top of the cumulative list."""
    prof = cProfile.Profile()
    for _ in range(steps):
        s.setup()
        prof.enable()
        s.optimizer.step()
        prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(12)
    return out.getvalue()


def usable(C: Any, path: str) -> bool:
    """Whether this torch lets the refresh read tensors on ``path``."""
    was = C.tensor_reads()
    try:
        C.tensor_reads(path)
    except RuntimeError:
        return False
    finally:
        C.tensor_reads(was)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensors", type=int, default=1000)
    ap.add_argument("--ratio-tensors", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=15)
    ap.add_argument("--calls", type=int, default=20, help="steps per sample")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    C = require_C()
    default = C.tensor_reads()
    paths = [default] + [p for p in PATHS if p != default and usable(C, p)]
    load_before = load_average()

    def use(path: str, s: Scenario) -> Callable[[], None]:
        def switch() -> None:  # a plan reads on the path it was built on: rebuilt, untimed
            C.tensor_reads(path)
            s.setup()
            s.optimizer.step()

        return switch

    cases: dict[str, Case] = {}
    parts: dict[str, tuple[Scenario, str, str, str]] = {}
    for opt_name, (fused_cls, _, hypers) in OPTIMIZERS.items():
        for grads in ("fresh", "kept", "flat"):
            s = Scenario(args.tensors, grads, lambda ps, c=fused_cls, h=hypers: c(ps, **h))
            for path in paths:
                tag = f"{opt_name} {grads} {path}"
                cases[f"step: {tag}"] = (s, s.optimizer.step, use(path, s), None)
                parts[tag] = (s, opt_name, grads, path)
                cases[f"refresh: {tag}"] = (
                    s,
                    lambda s=s: s.optimizer._plan.engine.refresh(),
                    use(path, s),
                    None,
                )
            # the engine alone, on this step's grads (the refresh before it, untimed, gives it
            # their addresses: a new grad's memory is not the last one's)
            cases[f"engine: {opt_name} {grads}"] = (
                s,
                lambda s=s: s.optimizer._plan.engine.run(torch.get_num_threads(), stream=0),
                use(default, s),
                lambda s=s: s.optimizer._plan.engine.refresh(),
            )
    n2 = args.ratio_tensors
    for opt_name, (fused_cls, torch_cls, hypers) in OPTIMIZERS.items():
        s = Scenario(n2, "kept", lambda ps, c=fused_cls, h=hypers: c(ps, **h))
        t = Scenario(n2, "kept", lambda ps, c=torch_cls, h=hypers: c(ps, **h, fused=True))
        for mode, (a, b) in {"after backward": (s, t), "back-to-back": (None, None)}.items():
            cases[f"ratio {mode}: fastopt {opt_name}"] = (
                a,
                s.optimizer.step,
                use(default, s),
                None,
            )
            cases[f"ratio {mode}: torch fused {opt_name}"] = (b, t.optimizer.step, None, None)
    samples = interleaved(cases, args.repeat, args.calls)
    C.tensor_reads(default)
    load_after = load_average()
    med = {name: statistics.median(v) for name, v in samples.items()}

    prof_scenario = next(
        s for s, o, g, path in parts.values() if (o, g, path) == ("adamw", "fresh", default)
    )
    prof = profile_text(prof_scenario, 50)

    threads = torch.get_num_threads()
    n = args.tensors
    lines = [
        f"# Host cost of a fused step, {n} tensors x {NUMEL} float32, one group (cpu, torch "
        f"{torch.__version__}, {threads} threads, load {load_before} -> {load_after}, "
        f"median of {args.repeat} samples of {args.calls} steps)",
        "",
        "| optimizer, grads | tensor reads | step µs | per tensor ns | refresh ns/tensor | "
        "engine ns/tensor | rest µs (Python, wrapper) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    rows: list[dict[str, Any]] = []
    for tag, (_, opt_name, grads, path) in parts.items():
        step = med[f"step: {tag}"]
        refresh = med[f"refresh: {tag}"]
        engine = med[f"engine: {opt_name} {grads}"]
        rest = step - refresh - engine
        rows.append(
            dict(
                optimizer=opt_name,
                grads=grads,
                tensor_reads=path,
                step_us=step * 1e6,
                per_tensor_ns=step / n * 1e9,
                refresh_ns_per_tensor=refresh / n * 1e9,
                engine_ns_per_tensor=engine / n * 1e9,
                python_us=rest * 1e6,
            )
        )
        lines.append(
            f"| {opt_name}, {grads} | {PATHS[path]} | "
            f"{step * 1e6:.1f} | {step / n * 1e9:.0f} | {refresh / n * 1e9:.0f} | "
            f"{engine / n * 1e9:.0f} | {rest * 1e6:.1f} |"
        )
    lines += [
        "",
        f"## {n2} tensors x {NUMEL}: fastopt vs torch's fused (same run, grads kept)",
        "",
        "after backward: each step follows a refill of every grad (zero_grad(set_to_none=False)"
        " and an add, as a training loop leaves them); back-to-back: steps one after the other"
        " (what `fastopt bench --set tiny2000` times)",
        "",
        "| optimizer | steps | fastopt µs | torch fused µs | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    ratios: dict[str, Any] = {}
    for opt_name in OPTIMIZERS:
        for mode in ("after backward", "back-to-back"):
            f = med[f"ratio {mode}: fastopt {opt_name}"]
            t = med[f"ratio {mode}: torch fused {opt_name}"]
            ratios[f"{opt_name} {mode}"] = dict(
                fastopt_us=f * 1e6, torch_fused_us=t * 1e6, speedup=t / f
            )
            lines.append(f"| {opt_name} | {mode} | {f * 1e6:.1f} | {t * 1e6:.1f} | {t / f:.1f}x |")
    lines += ["", "## cProfile of 50 AdamW steps (fresh grads)", "", "```", prof.strip(), "```"]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "host-overhead-cpu.md").write_text(text)
    raw = dict(
        tensors=n,
        numel=NUMEL,
        threads=threads,
        torch=torch.__version__,
        load=[load_before, load_after],
        repeat=args.repeat,
        calls=args.calls,
        rows=rows,
        ratios=ratios,
        samples_s=samples,
    )
    (args.out / "host-overhead-cpu.json").write_text(json.dumps(raw, indent=1) + "\n")


if __name__ == "__main__":
    main()
