"""Smoke test of bench/precision.py: a few steps of a tiny model in each mode write the figure
and tables (the real run takes minutes; its results are in bench/results/precision.*)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "precision.py"
MODES = ["fp32", "bf16", "bf16+master", "bf16+stochastic", "bf16+kahan"]


def test_precision_bench_smoke(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("bench_precision", SCRIPT)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        result = bench.main(
            ["--steps", "20", "--out", str(tmp_path), "--d-model", "16", "--layers", "1"]
            + ["--heads", "2", "--vocab", "8", "--seq-len", "4", "--batch", "4", "--threads", "1"]
        )
    finally:
        torch.set_num_threads(threads)  # main() sets the benchmark's thread count
    assert (tmp_path / "precision.png").stat().st_size > 0
    md = (tmp_path / "precision.md").read_text()
    table = json.loads((tmp_path / "precision.json").read_text())
    assert [r["mode"] for r in table["runs"]] == MODES == [r["mode"] for r in result["runs"]]
    for run in table["runs"]:
        assert f"| {run['mode']} |" in md
        assert math.isfinite(run["final_loss"]) and len(run["losses"]) == 20
        assert run["step_ms"] > 0 and run["iter_ms"] >= run["step_ms"]
    # bytes per param from the actual state tensors: param + exp_avg + exp_avg_sq (float32
    # states), plus a float32 master copy or a bfloat16 compensation buffer; the per-tensor step
    # counters add a little
    per_param = {r["mode"]: r["bytes_per_param"] for r in table["runs"]}
    for mode, expected in zip(MODES, [12, 10, 14, 10, 12]):
        assert expected <= per_param[mode] < expected + 1, (mode, per_param[mode])
