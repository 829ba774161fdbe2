"""Tables (rich, for the terminal, and markdown) and JSON of benchmark results.

The terminal tables fit the console's width, 80 columns and up: a cell wraps at its spaces,
never inside a figure, and the step and pipeline tables show one block per parameter set. A
figure that means nothing (the bandwidth of a step too small to be memory-bound) is
:data:`MEANINGLESS`, and a row measured while the machine was overloaded is marked
:data:`LOADED`; a note under the table says why.
"""

from __future__ import annotations

import io
import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from fastopt.benchmark.candidates import TORCH_IMPLS
from fastopt.benchmark.param_sets import get_set
from fastopt.benchmark.step import Comparison
from fastopt.benchmark.timing import MIN_BANDWIDTH_BYTES, machine_loaded
from fastopt.benchmark.train_loop import LoopResult

#: torch (or the peer library) has no such implementation of that optimizer
ABSENT = "n/a"
#: the implementation raised; a note names the error
FAILED = "failed"
#: a figure that would mean nothing here; a note says why
MEANINGLESS = "—"
#: suffix of a row measured while the load average exceeded the CPUs; a note says why
LOADED = "!"


@dataclass
class Table:
    """A titled table of strings; the first ``left`` columns are left-aligned.

    With ``grouped``, the terminal shows one block per value of the first column, headed by
    ``group_labels[value]`` (markdown keeps the column). ``loaded_rows`` maps the index of each
    row measured on an overloaded machine to the 1-minute load average then.
    """

    title: str
    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    left: int = 1
    notes: list[str] = field(default_factory=list)
    grouped: bool = False
    group_labels: dict[str, str] = field(default_factory=dict)
    loaded_rows: dict[int, float] = field(default_factory=dict)

    def add_row(self, cells: list[str], load_1m: float | None, cpus: int | None) -> None:
        """Append a row; one measured under ``load_1m`` above ``cpus`` gets :data:`LOADED`."""
        if load_1m is not None and machine_loaded(load_1m, cpus):
            self.loaded_rows[len(self.rows)] = load_1m
            key = 1 if self.grouped else 0  # the first column the terminal shows
            cells = [*cells[:key], cells[key] + LOADED, *cells[key + 1 :]]
        self.rows.append(cells)

    def finish_notes(self, cpus: int | None) -> None:
        """Add the notes that explain the marks the rows carry."""
        cells = [c for r in self.rows for c in r]
        if ABSENT in cells:
            self.notes.append(f"{ABSENT}: no implementation of that optimizer to compare with")
        if self.loaded_rows:
            peak = max(self.loaded_rows.values())
            self.notes.append(
                f"{LOADED} measured while the 1-minute load average (up to {peak:.1f}) exceeded "
                f"the {cpus} CPUs: other processes held cores, which slows torch's many short "
                "parallel regions far more than fastopt's one, so these speed-ups are inflated; "
                "rerun on an idle machine"
            )


def fmt_ms(seconds: float | None) -> str:
    """Milliseconds with about three significant digits."""
    if seconds is None:
        return ABSENT
    ms = seconds * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    return f"{ms:.3f}"


def fmt_x(ratio: float | None) -> str:
    """A speed-up with three significant digits: ``1.10×``, ``14.0×``, ``247×``."""
    if ratio is None:
        return ABSENT
    if ratio >= 99.5:
        return f"{ratio:.0f}×"
    if ratio >= 9.995:
        return f"{ratio:.1f}×"
    return f"{ratio:.2f}×"


def fmt_vs(seconds: float | None, ratio: float | None) -> str:
    """``'12.3 (4.10×)'``: a torch time and fastopt's speed-up over it."""
    if seconds is None:
        return ABSENT
    return fmt_ms(seconds) if ratio is None else f"{fmt_ms(seconds)} ({fmt_x(ratio)})"


def fmt_count(n: int | None) -> str:
    """``25.6M``, ``25.6K``, ``161``."""
    if n is None:
        return "?"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return str(n)


def fmt_iqr(c: Comparison | LoopResult, impl: str = "fastopt") -> str:
    """The interquartile range of ``impl``'s samples, in percent of their median."""
    s = c.stats.get(impl) if isinstance(c, Comparison) else c.total.get(impl)
    if s is None:
        return FAILED if impl in c.errors else ABSENT
    if s.median <= 0:
        return MEANINGLESS
    return f"{100 * s.iqr / s.median:.0f}%"


def _impl_cell(c: Comparison, impl: str) -> str:
    if impl in c.errors:
        return FAILED
    return fmt_vs(c.median(impl), c.speedup(impl))


def _bandwidth_cells(c: Comparison) -> list[str]:
    """GB/s and the fraction of the reference, or :data:`MEANINGLESS` for a small call."""
    if not c.bandwidth_meaningful:
        return [MEANINGLESS, MEANINGLESS]
    return [_fmt_float(c.gbps(), 1), _fmt_pct(c.fraction_of_reference())]


def _bandwidth_notes(results: Sequence[Comparison], ref: str) -> list[str]:
    notes = []
    if any(c.bandwidth_meaningful for c in results):
        notes.append(
            f"GB/s: the minimal bytes a step moves / median time; of {ref}: that bandwidth as a "
            f"fraction of an in-place {ref} of the same byte count, measured in the same run"
        )
    if not all(c.bandwidth_meaningful for c in results):
        notes.append(
            f"{MEANINGLESS} under GB/s and of {ref}: the step moves under "
            f"{MIN_BANDWIDTH_BYTES >> 20} MiB, so its time is per-call and per-tensor overhead "
            "with the data in the caches, not memory traffic; its ms and × compare that "
            "overhead"
        )
    return notes


def _set_label(c: Comparison) -> str:
    name = c.key["set"]
    info = c.info
    groups = info.get("groups") or 1
    label = (
        f"{name}: {get_set(name).description} · {info.get('tensors')} tensors, "
        f"{fmt_count(info.get('params'))} params"
    )
    if groups > 1:
        label += f", {groups} groups"
    scale = info.get("scale", 1.0)
    return label if scale == 1.0 else f"{label} (--scale {scale:g})"


def _error_notes(key: str, errors: dict[str, str]) -> list[str]:
    return [f"{key}: {impl} failed: {err}" for impl, err in errors.items()]


def step_table(results: Sequence[Comparison], cpus: int | None = None) -> Table:
    """fastopt's step time, each torch implementation's (and fastopt's speed-up over it).

    ``cpus``: the machine's CPU count; rows measured at a higher load average are marked.
    """
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
        grouped=True,
    )
    for c in results:
        table.group_labels.setdefault(c.key["set"], _set_label(c))
        table.add_row(
            [
                c.key["set"],
                c.key["optim"],
                c.key["dtype"],
                fmt_ms(c.median("fastopt")) if "fastopt" not in c.errors else FAILED,
                fmt_iqr(c),
                *(_impl_cell(c, i) for i in TORCH_IMPLS),
                *_bandwidth_cells(c),
            ],
            c.info.get("load_average_1m"),
            cpus,
        )
        table.notes += _error_notes(f"{c.key['set']}/{c.key['optim']}/{c.key['dtype']}", c.errors)
    if any(c.key["optim"] == "lars" for c in results):
        table.notes.append("LARS: for-loop is mmpretrain's LARS rule as a per-param loop")
    table.notes += _bandwidth_notes(results, ref)
    table.finish_notes(cpus)
    return table


def loop_table(results: Sequence[LoopResult], cpus: int | None = None) -> Table:
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

        table.add_row(
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
            ],
            r.info.get("load_average_1m"),
            cpus,
        )
        table.notes += _error_notes(f"{r.key['model']}/{r.key['optim']}", r.errors)
    table.notes.append(
        "× = speed-up of fastopt's whole iteration; fwd+bwd shows whether the optimizer's "
        "threads slow torch's own forward/backward"
    )
    table.finish_notes(cpus)
    return table


def pipeline_table(results: Sequence[Comparison], cpus: int | None = None) -> Table:
    """clip + step and AMP unscale + clip + step: fastopt's wrappers vs torch's sequence."""
    ref = results[0].reference_label if results else "add_"
    table = Table(
        "Gradient pipeline: clip_grad_norm_ + step, AMP unscale + clip + step (median ms)",
        ["set", "pipeline", "optim", "dtype", "fastopt ms", "IQR", "torch ms", "GB/s", f"of {ref}"],
        left=4,
        grouped=True,
    )
    for c in results:
        table.group_labels.setdefault(c.key["set"], _set_label(c))
        table.add_row(
            [
                c.key["set"],
                c.key["pipeline"],
                c.key["optim"],
                c.key["dtype"],
                fmt_ms(c.median("fastopt")) if "fastopt" not in c.errors else FAILED,
                fmt_iqr(c),
                _impl_cell(c, "torch"),
                *_bandwidth_cells(c),
            ],
            c.info.get("load_average_1m"),
            cpus,
        )
        key = f"{c.key['set']}/{c.key['pipeline']}/{c.key['optim']}"
        table.notes += _error_notes(key, c.errors)
    table.notes.append(
        "torch: clip_grad_norm_ (+ GradScaler unscale_/step/update) around the fused=True "
        "optimizer; fastopt: OptimWrapper / AmpOptimWrapper(clip_grad=dict(max_norm=1.0)).step()"
    )
    table.notes += _bandwidth_notes(results, ref)
    table.finish_notes(cpus)
    return table


def _fmt_float(x: float | None, digits: int) -> str:
    return ABSENT if x is None else f"{x:.{digits}f}"


def _fmt_pct(x: float | None) -> str:
    return ABSENT if x is None else f"{100 * x:.0f}%"


def load_warning(meta: dict[str, Any], tables: Sequence[Table] = ()) -> str | None:
    """A warning when the machine was overloaded before, during or after the run, else None."""
    cpus = meta.get("environment", {}).get("cpu_count")
    load = meta.get("load_average", {})
    loads = [x[0] for x in (load.get("before"), load.get("after")) if x]
    loads += [v for t in tables for v in t.loaded_rows.values()]
    marked = sum(len(t.loaded_rows) for t in tables)
    if not any(machine_loaded(x, cpus) for x in loads):
        return None
    rows = f"; {marked} rows are marked {LOADED}" if marked else ""
    return (
        f"warning: the machine was busy (load average up to {max(loads):.1f} on {cpus} CPUs"
        f"{rows}): other processes competed for the cores, so these timings and speed-ups are "
        "not reliable; rerun on an idle machine"
    )


def render_markdown(
    tables: Sequence[Table], meta_line: str = "", warning: str | None = None
) -> str:
    """GitHub markdown: a bold title, the table, its notes in a list."""
    out: list[str] = []
    if meta_line:
        out += [f"_{meta_line}_", ""]
    if warning:
        out += [f"**{warning}**", ""]
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


#: columns of space between two terminal columns: one of padding, one of the (blank) rule
_GAP = 2


def fit_widths(headers: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> list[int]:
    """Column widths that fit ``width`` (less the gaps), wrapping cells only at spaces.

    A column starts as wide as its widest cell and gives up a column at a time, the widest
    first, down to its longest word; room left over unwraps headers. If even the longest words
    do not fit, they are the limit and the terminal wraps the line.
    """
    columns = [[h, *(r[j] for r in rows)] for j, h in enumerate(headers)]
    words = [max(len(w) for cell in col for w in cell.split() or [""]) for col in columns]
    widths = [max(words[j], *(len(c) for c in col[1:])) for j, col in enumerate(columns)]
    excess = sum(widths) + _GAP * (len(widths) - 1) - width
    while excess > 0:
        j = max(range(len(widths)), key=lambda k: (widths[k] > words[k], widths[k]))
        if widths[j] <= words[j]:
            break
        widths[j] -= 1
        excess -= 1
    for j, h in enumerate(headers):
        grow = min(-excess, len(h) - widths[j])
        if grow > 0:
            widths[j] += grow
            excess += grow
    return widths


def _print_rich(console: Any, tables: Sequence[Table], meta_line: str, warning: str | None) -> None:
    from rich import box
    from rich.table import Table as RichTable
    from rich.text import Text

    def note(text: str, style: str = "dim") -> None:
        grid = RichTable.grid(padding=(0, 1))  # a hanging indent for wrapped lines
        grid.add_column(width=3, justify="right")
        grid.add_column()
        grid.add_row("*", Text(text))
        console.print(grid, style=style)

    if meta_line:
        console.print(Text(meta_line, style="dim"))
    if warning:
        console.print(Text(warning, style="bold yellow"))
    for t in tables:
        if not t.rows:
            continue
        console.print()
        console.print(Text(t.title, style="bold"))
        skip = 1 if t.grouped else 0
        blocks: dict[str | None, list[int]] = {}
        for i, row in enumerate(t.rows):
            blocks.setdefault(row[0] if t.grouped else None, []).append(i)
        for value, indices in blocks.items():
            if value is not None:
                console.print(Text(t.group_labels.get(value, value), style="cyan"))
            headers = t.headers[skip:]
            rows = [t.rows[i][skip:] for i in indices]
            # no vertical rules, one cell of padding: a cell wraps at its spaces (a header
            # over two lines, 'ms (×)' over two), never inside a figure
            rt = RichTable(
                box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0)
            )
            for j, (h, w) in enumerate(zip(headers, fit_widths(headers, rows, console.width))):
                justify = "left" if j + skip < t.left else "right"
                rt.add_column(h, justify=justify, width=w, overflow="fold")
            for i, row in zip(indices, rows):
                rt.add_row(*row, style="yellow" if i in t.loaded_rows else None)
            console.print(rt)
        for n in t.notes:
            note(n)


def render_text(
    tables: Sequence[Table], meta_line: str = "", warning: str | None = None, width: int = 80
) -> str:
    """The terminal rendering at ``width`` columns, as plain text."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None, highlight=False)
    _print_rich(console, tables, meta_line, warning)
    return console.file.getvalue()


def print_tables(
    tables: Sequence[Table],
    meta_line: str = "",
    warning: str | None = None,
    file: TextIO | None = None,
) -> None:
    """Print to the terminal (or ``file``), fitted to its width."""
    from rich.console import Console

    _print_rich(Console(file=file, highlight=False), tables, meta_line, warning)


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
