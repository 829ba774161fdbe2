"""Smoke tests of the benchmark suite: every expected row, sane numbers; no timing assertions.

Speed claims come from ``fastopt bench`` runs (ratios measured in one run), never from here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fastopt.benchmark import report
from fastopt.benchmark.candidates import OPTIMS, TORCH_IMPLS
from fastopt.benchmark.param_sets import DEFAULT_DTYPES, DTYPES, SETS, make_params
from fastopt.benchmark.references import ReferenceLARS
from fastopt.benchmark.timing import Stats, step_bytes, time_interleaved
from fastopt.cli import main
from fastopt.commands import bench

QUICK = ["bench", "--scale", "0.001", "--repeat", "2", "--warmup", "1", "--sample-ms", "0", "-q"]


def test_param_sets_are_the_real_models() -> None:
    resnet, gpt2 = SETS["resnet50"], SETS["gpt2"]
    assert (resnet.n_tensors, resnet.numel) == (161, 25_557_032)  # torchvision resnet50()
    assert dict(resnet.shapes)["fc.weight"] == (1000, 2048)
    assert SETS["resnet50-paramwise"].shapes == resnet.shapes
    assert SETS["resnet50-paramwise"].per_param_groups and not resnet.per_param_groups
    assert (gpt2.n_tensors, gpt2.numel) == (148, 124_439_808)  # HF gpt2, tied LM head
    assert dict(gpt2.shapes)["wte.weight"] == (50257, 768)
    assert dict(gpt2.shapes)["h.11.mlp.c_proj.weight"] == (3072, 768)
    sizes = [s[0] for _, s in SETS["mixed2000"].shapes]
    assert len(sizes) == 2000 and min(sizes) >= 64 and max(sizes) <= 65536
    assert min(sizes) < 128 and max(sizes) > 32768  # spans the range
    assert SETS["tiny2000"].numel == 2000 * 16
    for pset in SETS.values():
        assert len({n for n, _ in pset.shapes}) == pset.n_tensors
        assert pset.scaled_numel(0.001) < pset.numel


def test_command_choices_match_the_registries() -> None:
    assert bench.SET_NAMES == tuple(SETS)
    assert bench.OPTIM_NAMES == tuple(OPTIMS)
    assert bench.DTYPE_NAMES == tuple(DTYPES)
    assert bench.DEFAULT_DTYPES == DEFAULT_DTYPES
    assert bench.TORCH_IMPLS == TORCH_IMPLS


def test_benchmark_package_imports_without_torch() -> None:
    code = (
        "import sys, fastopt.benchmark.report, fastopt.benchmark.pipeline, "
        "fastopt.commands.bench; assert 'torch' not in sys.modules, 'torch imported'"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_params_are_seeded_with_nonzero_grads() -> None:
    a = make_params("tiny2000", "fp32", seed=3)
    b = make_params("tiny2000", "fp32", seed=3)
    assert all(
        torch.equal(x, y) and torch.equal(x.grad, y.grad) for x, y in zip(a.tensors, b.tensors)
    )
    assert all(bool((t.grad != 0).all()) for t in a.tensors)
    bf = make_params("resnet50-paramwise", "bf16", scale=0.001)
    assert {t.dtype for t in bf.tensors} == {torch.bfloat16} and bf.states_in_param_dtype
    assert {t.grad.dtype for t in bf.tensors} == {torch.bfloat16}
    groups = bf.param_groups({"lars_exclude": True})
    assert len(groups) == 161
    no_decay = [g for g in groups if g.get("weight_decay") == 0.0]
    assert len(no_decay) == 107  # 53 norm layers x (weight, bias) + fc.bias
    assert all(g["lars_exclude"] for g in no_decay)
    assert len(make_params("gpt2", scale=0.001).param_groups()[0]["params"]) == 148


def test_bytes_per_step() -> None:
    assert step_bytes("adamw", 10, 4, 4) == 10 * 28  # p rw, g r, m rw, v rw
    assert step_bytes("sgd", 10, 2, 2) == 10 * 10
    assert step_bytes("adam", 10, 2, 4) == 10 * (3 * 2 + 4 * 4)
    assert step_bytes("adamw", 10, 4, 4, extra_grad_reads=1) == 10 * 32


def test_time_interleaved_drops_a_failing_candidate() -> None:
    calls: list[str] = []

    def boom() -> None:
        raise RuntimeError("no engine")

    stats, errors = time_interleaved(
        {"a": lambda: calls.append("a"), "b": lambda: calls.append("b"), "bad": boom},
        repeat=3,
        warmup=1,
        min_sample_s=0,
    )
    assert set(stats) == {"a", "b"} and errors == {"bad": "RuntimeError: no engine"}
    assert all(len(s.samples) == 3 and s.median >= 0 for s in stats.values())
    assert calls[2:] == ["a", "b", "b", "a", "a", "b"]  # rounds rotate the order
    s = Stats([1.0, 2.0, 3.0, 4.0])
    assert (s.median, s.quantile(0.25), s.iqr) == (2.5, 1.75, 1.5)


def test_reference_lars_follows_mmpretrain() -> None:
    """The LARS baseline reproduces the reference's golden trajectory (g7)."""
    p = torch.tensor([3.0, 4.0], requires_grad=True)
    opt = ReferenceLARS([p], lr=0.1, momentum=0.9, weight_decay=0.01, eta=1e-3)
    golden = [[2.9997000694, 3.9995999336], [2.9991300106, 3.9988398552]]
    for want in golden:
        p.grad = torch.tensor([0.6, 0.8])
        opt.step()
        assert p.tolist() == pytest.approx(want, rel=1e-6)


def _positive(x: object) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_step_json_has_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bench.json"
    assert main([*QUICK, "--impl", "fused", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    data = json.loads(out.read_text())
    rows = {(r["set"], r["optim"], r["dtype"]): r for r in data["step"]}
    assert set(rows) == {(s, o, d) for s in SETS for o in OPTIMS for d in DEFAULT_DTYPES}
    for (set_name, optim, _), r in rows.items():
        expected = {"fastopt", "fused"} if OPTIMS[optim].has_fused_peer else {"fastopt"}
        assert set(r["impls"]) == expected and not r["errors"], r
        assert all(
            _positive(i["median_ms"]) and i["q1_ms"] <= i["q3_ms"] for i in r["impls"].values()
        )
        assert r["tensors"] == SETS[set_name].n_tensors
        assert _positive(r["gbps"]) and _positive(r["fraction_of_reference"])
        assert _positive(r["reference"]["gbps"]) and r["reference"]["kind"] == "add_"
        assert all(_positive(x) for x in r["speedup"].values())
    assert data["meta"]["environment"]["torch"] == torch.__version__
    for set_name in SETS:
        assert set_name in table


def test_bench_markdown_with_train_loop_and_pipeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench.json"
    args = [*QUICK, "--set", "tiny2000", "--optim", "adamw", "lars", "--dtype", "fp32"]
    assert main([*args, "--train-loop", "--pipeline", "--markdown", "--json", str(out)]) == 0
    md = capsys.readouterr().out
    data = json.loads(out.read_text())

    step = {r["optim"]: r for r in data["step"]}
    assert set(step) == {"adamw", "lars"}
    assert set(step["adamw"]["impls"]) == {"fastopt", *TORCH_IMPLS}
    assert set(step["lars"]["impls"]) == {"fastopt", "for-loop"}  # the reference LARS loop
    assert {(r["model"], r["optim"]) for r in data["train_loop"]} == {
        ("cnn", "adamw"),
        ("transformer", "adamw"),
    }
    for r in data["train_loop"]:
        assert set(r["impls"]) == {"fastopt", "fused", "foreach"} and not r["errors"]
        for i in r["impls"].values():
            assert _positive(i["median_ms"]) and _positive(i["fwd_bwd_median_ms"])
    assert {(r["set"], r["pipeline"]) for r in data["pipeline"]} == {
        ("tiny2000", "clip"),
        ("tiny2000", "amp"),
    }
    for r in data["pipeline"]:
        assert set(r["impls"]) == {"fastopt", "torch"} and not r["errors"], r
        assert _positive(r["speedup"]["torch"])

    assert "| set | optim | dtype | fastopt ms |" in md
    assert "| model | optim | batch | fastopt ms |" in md
    assert "| set | pipeline | optim | dtype | fastopt ms |" in md
    md = md.replace(f"{report.LOADED} |", " |")  # rows measured on a busy machine are marked
    assert md.count("| tiny2000 | adamw | fp32 |") == 1
    assert md.count("| tiny2000 | lars | fp32 |") == 1
    assert "| cnn | adamw |" in md and "| transformer | adamw |" in md
    assert "| tiny2000 | clip | adamw | fp32 |" in md and "| tiny2000 | amp | adamw | fp32 |" in md


def test_bench_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--no-step"]) == 2
    assert main(["bench", "--repeat", "0"]) == 2
    assert "--repeat" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["bench", "--device", "cuda"]) == 2
    with pytest.raises(SystemExit):
        main(["bench", "--set", "resnet18"])
