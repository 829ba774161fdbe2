"""The benchmark tables as a terminal shows them: their width, the "—" rule and the load marks.

Results are built from given timings (no measuring), and the machine's load is a parameter.
"""

from __future__ import annotations

import re

import pytest

from fastopt.benchmark import report
from fastopt.benchmark.step import Comparison
from fastopt.benchmark.timing import MIN_BANDWIDTH_BYTES, REFERENCE, Stats, machine_loaded
from fastopt.benchmark.train_loop import LoopResult
from fastopt.cli import build_parser
from fastopt.commands import bench

BIG = 512 << 20  # a full-size ResNet-50 step moves about this much
SMALL = 300 << 10  # the same at --scale 0.001


def comparison(
    set_name: str = "resnet50-paramwise",
    optim: str = "adamw",
    dtype: str = "fp32",
    *,
    nbytes: int = BIG,
    load: float | None = 0.5,
    kind: str = "step",
    peers: dict[str, float] | None = None,
    **key: str,
) -> Comparison:
    """fastopt at 12.3 ms, the peers at the given seconds, the reference at 20 GB/s."""
    times = {"fastopt": 0.0123, REFERENCE: nbytes / 20e9}
    times.update(peers if peers is not None else {"for-loop": 0.837, "foreach": 0.0456})
    return Comparison(
        kind,
        {"set": set_name, "optim": optim, "dtype": dtype, **key},
        {name: Stats([t * 0.99, t, t * 1.02], inner=1) for name, t in times.items()},
        nbytes,
        nbytes,
        "add_",
        info={"tensors": 161, "params": 25_557_032, "groups": 161, "load_average_1m": load},
    )


def loop_result(model: str, optim: str, load: float | None = 0.5) -> LoopResult:
    def stats(t: float) -> dict[str, Stats]:
        return {impl: Stats([t, t * 1.01], inner=1) for impl in ("fastopt", "fused", "foreach")}

    return LoopResult(
        {"model": model, "optim": optim},
        total=stats(0.0338),
        fwd_bwd=stats(0.0331),
        step=stats(0.000523),
        info={"batch": 128, "load_average_1m": load},
    )


def every_table(cpus: int = 2) -> list[report.Table]:
    step = [
        comparison(set_name, optim, dtype, nbytes=BIG if dtype == "fp32" else SMALL)
        for set_name in ("resnet50-paramwise", "tiny2000")
        for optim in ("sgd", "adagrad", "rmsprop", "lars", "lamb")
        for dtype in ("fp32", "bf16")
    ]
    step.append(
        comparison("mixed2000", "adamw", peers={"for-loop": 0.9, "foreach": 9.9, "fused": 1.5})
    )
    loop = [loop_result(m, o) for m in ("cnn", "transformer") for o in ("sgd", "adamw")]
    pipe = [
        comparison("resnet50-paramwise", "adamw", kind="pipeline", pipeline=p, peers={"torch": 0.1})
        for p in ("clip", "amp")
    ]
    return [
        report.step_table(step, cpus),
        report.loop_table(loop, cpus),
        report.pipeline_table(pipe, cpus),
    ]


META = {
    "environment": {"cpu_count": 2, "fastopt": "0.1.0", "torch": "2.13.0+cpu", "torch_threads": 2},
    "load_average": {"before": [0.4, 0.3, 0.2], "after": [0.9, 0.5, 0.3]},
    "repeat": 3,
    "scale": 1.0,
}


@pytest.mark.parametrize("width", [80, 100, 120])
def test_tables_fit_the_terminal_and_keep_every_figure(width: int) -> None:
    tables = every_table()
    text = report.render_text(tables, report.meta_line(META), width=width)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width, "\n".join(
        line for line in lines if len(line) > width
    )
    assert "…" not in text  # nothing truncated
    words = set(text.split())
    for t in tables:  # every figure of every cell is there, unbroken
        for row in t.rows:
            for cell in row[1:] if t.grouped else row:
                assert set(cell.split()) <= words, (cell, width)
    for set_name in ("resnet50-paramwise", "tiny2000", "mixed2000"):
        assert re.search(rf"^{set_name}: ", text, re.M)  # one block per parameter set


def test_wide_terminals_show_each_row_on_one_line() -> None:
    text = report.render_text(every_table(), width=120)
    assert re.search(r"^sgd +fp32 +12\.3 +\d+% +837 \(68\.0×\) +45\.6 \(3\.71×\) +n/a ", text, re.M)


def test_fit_widths_wraps_at_spaces_and_never_inside_a_word() -> None:
    headers = ["optim", "fastopt ms", "for-loop ms"]
    rows = [["rmsprop", "0.123", "837 (68.0×)"]]
    assert report.fit_widths(headers, rows, 120) == [7, 10, 11]  # headers unwrapped
    assert report.fit_widths(headers, rows, 26) == [7, 7, 8]  # 'for-loop' is the longest word
    assert report.fit_widths(headers, rows, 10) == [7, 7, 8]  # the words are the limit


def test_bandwidth_of_a_small_step_is_shown_as_meaningless() -> None:
    small, big = comparison(nbytes=MIN_BANDWIDTH_BYTES - 1), comparison(nbytes=MIN_BANDWIDTH_BYTES)
    assert not small.bandwidth_meaningful and big.bandwidth_meaningful
    assert small.to_dict()["bandwidth_meaningful"] is False
    table = report.step_table([small, big])
    assert table.rows[0][-2:] == [report.MEANINGLESS, report.MEANINGLESS]
    gbps = MIN_BANDWIDTH_BYTES / 0.0123 / 1e9  # the reference runs at 20 GB/s
    assert table.rows[1][-2:] == [f"{gbps:.1f}", f"{100 * gbps / 20:.0f}%"] == ["5.5", "27%"]
    (note,) = [n for n in table.notes if n.startswith(report.MEANINGLESS)]
    assert "64 MiB" in note and "overhead" in note
    only_small = report.step_table([small])
    assert not any(n.startswith("GB/s:") for n in only_small.notes)
    pipe = report.pipeline_table([comparison(kind="pipeline", pipeline="clip", nbytes=SMALL)])
    assert pipe.rows[0][-2:] == [report.MEANINGLESS, report.MEANINGLESS]


def test_missing_and_failed_implementations_are_named() -> None:
    c = comparison(optim="lars", peers={"for-loop": 0.1})
    c.errors["foreach"] = "RuntimeError: boom"
    table = report.step_table([c])
    row = table.rows[0]
    assert row[5:8] == ["100 (8.13×)", report.FAILED, report.ABSENT]
    assert any("foreach failed: RuntimeError: boom" in n for n in table.notes)
    assert any(n.startswith(f"{report.ABSENT}:") for n in table.notes)


def test_rows_measured_on_an_overloaded_machine_are_marked() -> None:
    assert machine_loaded(2.5, 2) and not machine_loaded(2.0, 2) and not machine_loaded(None, 2)
    quiet, busy = comparison(optim="sgd", load=1.9), comparison(optim="adamw", load=3.4)
    table = report.step_table([quiet, busy], cpus=2)
    assert table.rows[0][1] == "sgd" and table.rows[1][1] == "adamw" + report.LOADED
    assert table.loaded_rows == {1: 3.4}
    (note,) = [n for n in table.notes if n.startswith(report.LOADED)]
    assert "3.4" in note and "2 CPUs" in note and "inflated" in note
    assert report.step_table([quiet, busy], cpus=4).loaded_rows == {}  # 3.4 on 4 cores is fine
    loop = report.loop_table([loop_result("cnn", "sgd", load=5.0)], cpus=2)
    assert loop.rows[0][0] == "cnn" + report.LOADED

    assert report.load_warning(META, [report.step_table([quiet], cpus=2)]) is None
    warning = report.load_warning(META, [table])
    assert warning is not None and "3.4 on 2 CPUs" in warning and "1 rows are marked !" in warning
    busy_after = {**META, "load_average": {"before": [0.5] * 3, "after": [2.6] * 3}}
    assert "2.6 on 2 CPUs" in (report.load_warning(busy_after) or "")
    text = report.render_text([table], warning=warning, width=80)
    assert text.startswith("warning: the machine was busy")
    assert report.render_markdown([table], warning=warning).startswith("**warning:")


def test_quick_preset_fills_only_what_is_not_given() -> None:
    parser = build_parser()
    quick = bench.resolve(parser.parse_args(["bench", "--quick"]))
    assert (quick.set, quick.dtype) == (bench.QUICK["set"], None)  # None: every dtype
    assert (quick.scale, quick.repeat) == (0.001, bench.QUICK["repeat"])
    assert (quick.warmup, quick.sample_ms) == (
        bench.DEFAULTS["warmup"],
        bench.DEFAULTS["sample_ms"],
    )
    mine = bench.resolve(parser.parse_args(["bench", "--quick", "--repeat", "7", "--set", "gpt2"]))
    assert (mine.repeat, mine.set, mine.scale) == (7, ["gpt2"], 0.001)
    full = bench.resolve(parser.parse_args(["bench"]))
    assert (full.set, full.dtype, full.scale, full.repeat) == (None, None, 1.0, 20)
