"""Tables (rich, plain text, markdown) and JSON of benchmark results."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastopt.benchmark.candidates import TORCH_IMPLS
from fastopt.benchmark.step import Comparison
from fastopt.benchmark.train_loop import LoopResult

DASH = "–"


@dataclass
class Table:
    """A titled table of strings; the first ``left`` columns are left-aligned."""

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1
    notes: list[str] = field(default_factory=list)


def fmt_ms(seconds: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if seconds is None:
        return DASH
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_x(ratio: float | None) -> str:
    return DASH if ratio is None else f"{ratio:.2f}×"


def fmt_vs(seconds: float | None, ratio: float | None) -> str:
    """``'12.3 (4.10×)'``: a torch time and fastopt's speed-up over it."""
    return DASH if seconds is None else f"{fmt_ms(seconds)} ({fmt_x(ratio)})"


def fmt_iqr(c: Comparison | LoopResult, impl: str = "fastopt") -> str:
    """The interquartile range of ``impl``'s samples, in percent of their median."""
    s = c.stats.get(impl) if isinstance(c, Comparison) else c.total.get(impl)
    if s is None or s.median <= 0:
        return DASH
    return f"{100 * s.iqr / s.median:.0f}%"


def _error_notes(key: str, errors: dict[str, str]) -> list[str]:
    return [f"{key}: {impl} failed: {err}" for impl, err in errors.items()]


def step_table(results: Sequence[Comparison]) -> Table:
    """fastopt's step time, each torch implementation's (and fastopt's speed-up over it)."""
    ref = results[0].reference_label if results else "add_"
    table = Table(
        "Optimizer step: fastopt vs torch.optim (median ms per step; × = speed-up of fastopt)",
        [
            "set",
            "optim",
            "dtype",
            "fastopt ms",
            "IQR",
            *(f"{impl} ms" for impl in TORCH_IMPLS),
            "GB/s",
            f"of {ref}",
        ],
        left=3,
    )
    for c in results:
        table.rows.append(
            [
                c.key["set"],
                c.key["optim"],
                c.key["dtype"],
                fmt_ms(c.median("fastopt")),
                fmt_iqr(c),
                *(fmt_vs(c.median(i), c.speedup(i)) for i in TORCH_IMPLS),
                _fmt_float(c.gbps(), 1),
                _fmt_pct(c.fraction_of_reference()),
            ]
        )
        table.notes += _error_notes(f"{c.key['set']}/{c.key['optim']}/{c.key['dtype']}", c.errors)
    if any(c.key["optim"] == "lars" for c in results):
        table.notes.append("LARS: for-loop is mmpretrain's LARS rule as a per-param loop")
    table.notes.append(
        f"GB/s: the minimal bytes a step moves / median time; of {ref}: that bandwidth as a "
        f"fraction of an in-place {ref} of the same byte count, measured in the same run "
        "(meaningful when a step moves far more bytes than the caches hold; tiny2000 is "
        "bound by per-call overhead)"
    )
    return table


def loop_table(results: Sequence[LoopResult]) -> Table:
    """Training iterations (forward + backward + step) with each optimizer implementation."""
    table = Table(
        "Training loop: forward + backward + step (median ms per iteration)",
        [
            "model",
            "optim",
            "batch",
            "fastopt ms",
            "IQR",
            "fused ms",
            "foreach ms",
            "fwd+bwd fastopt / fused",
            "step fastopt / fused",
        ],
        left=2,
    )
    for r in results:

        def med(d: dict[str, Any], impl: str) -> float | None:
            s = d.get(impl)
            return None if s is None else s.median

        table.rows.append(
            [
                r.key["model"],
                r.key["optim"],
                str(r.info.get("batch", "")),
                fmt_ms(med(r.total, "fastopt")),
                fmt_iqr(r),
                fmt_vs(med(r.total, "fused"), r.speedup("fused")),
                fmt_vs(med(r.total, "foreach"), r.speedup("foreach")),
                f"{fmt_ms(med(r.fwd_bwd, 'fastopt'))} / {fmt_ms(med(r.fwd_bwd, 'fused'))}",
                f"{fmt_ms(med(r.step, 'fastopt'))} / {fmt_ms(med(r.step, 'fused'))}",
            ]
        )
        table.notes += _error_notes(f"{r.key['model']}/{r.key['optim']}", r.errors)
    table.notes.append(
        "× = speed-up of fastopt's whole iteration; fwd+bwd shows whether the optimizer's "
        "threads slow torch's own forward/backward"
    )
    return table


def pipeline_table(results: Sequence[Comparison]) -> Table:
    """clip + step and AMP unscale + clip + step: fastopt's wrappers vs torch's sequence."""
    ref = results[0].reference_label if results else "add_"
    table = Table(
        "Gradient pipeline: clip_grad_norm_ + step, AMP unscale + clip + step (median ms)",
        ["set", "pipeline", "optim", "dtype", "fastopt ms", "IQR", "torch ms", "GB/s", f"of {ref}"],
        left=4,
    )
    for c in results:
        table.rows.append(
            [
                c.key["set"],
                c.key["pipeline"],
                c.key["optim"],
                c.key["dtype"],
                fmt_ms(c.median("fastopt")),
                fmt_iqr(c),
                fmt_vs(c.median("torch"), c.speedup("torch")),
                _fmt_float(c.gbps(), 1),
                _fmt_pct(c.fraction_of_reference()),
            ]
        )
        key = f"{c.key['set']}/{c.key['pipeline']}/{c.key['optim']}"
        table.notes += _error_notes(key, c.errors)
    table.notes.append(
        "torch: clip_grad_norm_ (+ GradScaler unscale_/step/update) around the fused=True "
        "optimizer; fastopt: OptimWrapper / AmpOptimWrapper(clip_grad=dict(max_norm=1.0)).step()"
    )
    return table


def _fmt_float(x: float | None, digits: int) -> str:
    return DASH if x is None else f"{x:.{digits}f}"


def _fmt_pct(x: float | None) -> str:
    return DASH if x is None else f"{100 * x:.0f}%"


def render_markdown(tables: Sequence[Table], meta_line: str = "") -> str:
    """GitHub markdown: a bold title, the table, its notes in a list."""
    out: list[str] = []
    if meta_line:
        out += [f"_{meta_line}_", ""]
    for t in tables:
        if not t.rows:
            continue
        out += [f"**{t.title}**", ""]
        out.append("| " + " | ".join(t.headers) + " |")
        out.append(
            "|" + "|".join(":---" if i < t.left else "---:" for i in range(len(t.headers))) + "|"
        )
        out += ["| " + " | ".join(row) + " |" for row in t.rows]
        out.append("")
        out += [f"- {n}" for n in t.notes]
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def render_plain(tables: Sequence[Table], meta_line: str = "") -> str:
    """Fixed-width text, for when rich is not installed."""
    out: list[str] = [meta_line, ""] if meta_line else []
    for t in tables:
        if not t.rows:
            continue
        widths = [max(len(h), *(len(r[i]) for r in t.rows)) for i, h in enumerate(t.headers)]

        def line(cells: Sequence[str], widths: list[int] = widths, left: int = t.left) -> str:
            return "  ".join(
                c.ljust(w) if i < left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths))
            )

        out += [t.title, line(t.headers), line(["-" * w for w in widths])]
        out += [line(r) for r in t.rows]
        out += [f"  * {n}" for n in t.notes]
        out.append("")
    return "\n".join(out)


def print_tables(tables: Sequence[Table], meta_line: str = "", file: TextIO | None = None) -> None:
    """Print with rich when it is installed, as plain text otherwise."""
    try:
        from rich.console import Console
        from rich.table import Table as RichTable
    except ImportError:
        print(render_plain(tables, meta_line), file=file)
        return
    natural = max(
        (
            sum(max(len(h), *(len(r[i]) for r in t.rows)) + 3 for i, h in enumerate(t.headers)) + 1
            for t in tables
            if t.rows
        ),
        default=80,
    )
    console = Console(file=file, soft_wrap=False)
    if console.width < natural:  # never truncate figures: let a narrow terminal wrap lines
        console = Console(file=file, soft_wrap=False, width=natural)
    if meta_line:
        console.print(meta_line, style="dim", highlight=False)
    for t in tables:
        if not t.rows:
            continue
        rt = RichTable(title=t.title, title_justify="left")
        for i, h in enumerate(t.headers):
            rt.add_column(h, justify="left" if i < t.left else "right", no_wrap=True)
        for r in t.rows:
            rt.add_row(*r)
        console.print(rt)
        for n in t.notes:
            console.print(f"  * {n}", style="dim", highlight=False)


def environment(device: str) -> dict[str, Any]:
    """Versions, threads, CPU code path and device: the context of a set of figures."""
    import torch

    import fastopt

    env: dict[str, Any] = {
        "fastopt": fastopt.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
    }
    try:
        from fastopt._ext import build_info

        info = build_info()
        env["backends"] = info.get("backends")
        env["cpu_isa"] = info.get("cpu_isa")
    except Exception as e:  # the figures still mean something without it
        env["build_info_error"] = str(e)
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def meta_line(meta: dict[str, Any]) -> str:
    """One line: versions, device, threads, settings and the machine load around the run."""
    env = meta.get("environment", {})
    where = env.get("gpu") or f"{env.get('device', 'cpu')}, {env.get('torch_threads')} threads"
    if env.get("cpu_isa") and not env.get("gpu"):
        where += f", {env['cpu_isa']}"
    load = meta.get("load_average", {})
    before, after = load.get("before"), load.get("after")
    parts = [
        f"fastopt {env.get('fastopt')} · torch {env.get('torch')} · {where}",
        f"repeat {meta.get('repeat')} · scale {meta.get('scale')}",
    ]
    if before and after:
        parts.append(f"load avg {before[0]:.1f} → {after[0]:.1f} on {env.get('cpu_count')} CPUs")
    return " · ".join(parts)


def to_json(
    meta: dict[str, Any],
    step: Sequence[Comparison] = (),
    loop: Sequence[LoopResult] = (),
    pipeline: Sequence[Comparison] = (),
) -> dict[str, Any]:
    return {
        "meta": meta,
        "step": [c.to_dict() for c in step],
        "train_loop": [r.to_dict() for r in loop],
        "pipeline": [c.to_dict() for c in pipeline],
    }


def write_json(path: str | Path, data: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n")
