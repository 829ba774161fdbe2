"""What a first GPU run needs that can be checked without one (issue 17): the GPU tests collect
without the emulation module, the driver and device requirements are decided right, a plan's
buffers follow the streams and graph captures they are used in, the launch variants run the
emulated kernels to the CPU engine's results, and the GPU check script runs to its summary.

The real CUDA calls behind the stream and capture rules run only on a GPU (test_cuda.py); here
they are driven with stand-ins for torch's stream, event and tensor objects.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import fastopt_subprocess_env
from optim_reference import CASES, engine

import fastopt
from fastopt import _C as CPU
from fastopt import _ext
from fastopt.ops import averaging
from fastopt.ops.device import DeviceUse

SIMT = pytest.importorskip("fastopt._C_simt", reason="fastopt._C_simt is not built")

ROOT = Path(__file__).resolve().parent.parent

# ---- 1. pytest -m cuda collects without fastopt._C_simt ---------------------------------------

BLOCK_SIMT = """
import importlib.abc, sys
class NoSimt(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "fastopt._C_simt":
            raise ModuleNotFoundError("No module named fastopt._C_simt (FASTOPT_SIMT=OFF)")
sys.meta_path.insert(0, NoSimt())
import pytest
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", "--collect-only", "-m", "cuda", "tests"]))
"""


def test_gpu_tests_collect_without_the_emulation_module():
    out = subprocess.run(
        # -P: not the clone's ./fastopt (no compiled engine in CI) but the one this run imports
        [sys.executable, "-P", "-c", BLOCK_SIMT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=fastopt_subprocess_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "error" not in out.stdout.lower()
    collected = [line for line in out.stdout.splitlines() if "tests/test_cuda.py::" in line]
    assert len(collected) > 40  # every GPU test, none lost to an import error


# ---- 2. driver and compute capability --------------------------------------------------------

ARCHS = "80-real,90-real,90-virtual"


@pytest.mark.parametrize(
    "driver, runtime, cc, archs, expected",
    [
        (13000, 13000, (9, 0), ARCHS, ""),
        (13020, 13000, (8, 6), ARCHS, ""),  # sm_80 machine code runs on 8.6
        (13000, 13000, (8, 9), ARCHS, ""),
        (12040, 12040, (8, 0), ARCHS, ""),
        (12020, 12040, (9, 0), ARCHS, ""),  # minor version compatibility within 12.x
        (13000, 13000, (10, 0), ARCHS, ""),  # compute_90 PTX, driver as new as the toolkit
        (12080, 13000, (9, 0), ARCHS, "needs a driver supporting CUDA 13.0 (R580 or newer)"),
        (12000, 12040, (9, 0), ARCHS, "needs a driver supporting CUDA 12.1"),
        (0, 13000, (9, 0), ARCHS, "no NVIDIA driver was found"),
        (13000, 13000, (6, 1), ARCHS, "compute capability 7.0 or newer"),
        (13000, 13000, (7, 5), ARCHS, "none of which runs on this GPU (compute capability 7.5)"),
        (13000, 13000, (8, 0), "90-real;90-virtual", "FASTOPT_CUDA_ARCHS, e.g. 80-real"),
        (13000, 13000, (9, 0), "90a-real", ""),
        (13000, 13000, (10, 0), "90a-real", "none of which runs"),  # arch-specific: 9.0 only
        (13000, 13000, (7, 5), "all-major", ""),  # CMake keywords: not second-guessed
        (13000, 13000, (9, 0), "80", ""),  # "80": sm_80 code and compute_80 PTX
        (12040, 12080, (10, 0), ARCHS, "driver compiles only when it supports the toolkit"),
    ],
)
def test_device_requirements(driver, runtime, cc, archs, expected):
    problem = SIMT.cuda_device_problem(driver, runtime, cc[0], cc[1], archs)
    if expected:
        assert expected in problem
        assert problem.count("README") <= 1
    else:
        assert problem == ""


def test_a_driver_problem_names_the_remedy():
    problem = SIMT.cuda_device_problem(12040, 13000, 9, 0, ARCHS)
    assert "built with CUDA 13.0" in problem and "this driver supports CUDA 12.4" in problem
    assert "12.1 or newer" in problem and "torch.version.cuda" in problem


def test_cuda_version_numbers():
    assert _ext.cuda_version_number("13.0 (static)") == 13000
    assert _ext.cuda_version_number("12.4") == 12040
    assert _ext.cuda_version_number("none") == 0
    assert _ext.cuda_version_number("") == 0


def test_info_reports_the_driver():
    built = {
        "torch": "2.13.0",
        "backends": ["cpu", "cuda"],
        "cuda_runtime": "13.0 (static)",
        "cuda_driver": "12.4",
        "cuda_devices": 1,
        "cuda_problem": "fastopt's CUDA engine was built with CUDA 13.0 ...",
    }
    assert _ext.cuda_summary(built, "12.4") == (
        "built with CUDA 13.0 (driver: CUDA 12.4); 1 GPU visible, unusable: see cuda_problem"
    )
    ok = {k: v for k, v in built.items() if k != "cuda_problem"}
    assert (
        _ext.cuda_summary(ok, "12.4") == "built with CUDA 13.0 (driver: CUDA 12.4); 1 GPU visible"
    )
    none = {**ok, "cuda_driver": "none", "cuda_devices": 0}
    assert _ext.cuda_summary(none, None).startswith("built with CUDA 13.0 (driver: none); no GPU")
    assert SIMT.cuda_driver_version() == 0  # the emulation has no driver


# ---- 4/5. streams and graph captures of a plan's buffers --------------------------------------


class FakeStream:
    def __init__(self, handle):
        self.cuda_stream = handle
        self.waited = []

    def wait_event(self, event):
        self.waited.append(event)


class FakeBuffer:
    def __init__(self):
        self.streams = []

    def record_stream(self, stream):
        self.streams.append(stream.cuda_stream)


def test_a_new_stream_waits_for_the_build_and_is_recorded_once():
    bufs = [FakeBuffer(), FakeBuffer()]
    use = DeviceUse(7, "ready", [bufs[0], None, bufs[1]], capturing=lambda: False)
    build, other = FakeStream(7), FakeStream(9)
    use.before_run(build, lambda: [])
    assert build.waited == [] and bufs[0].streams == []  # the build stream: nothing to do
    for _ in range(3):
        use.before_run(other, lambda: [])
    assert other.waited == ["ready"]
    assert bufs[0].streams == bufs[1].streams == [9]
    assert use.captured is None


def test_a_capture_keeps_what_the_graph_addresses():
    capturing = [False]
    use = DeviceUse(7, "ready", [FakeBuffer()], capturing=lambda: capturing[0])
    held = ["plan", "grad"]
    capturing[0] = True
    side = FakeStream(11)
    use.before_run(side, lambda: held)
    assert use.captured == held
    assert side.waited == [] and 11 not in use.streams  # no stream work inside a capture
    keep: list = []
    with pytest.warns(RuntimeWarning, match="capture the step again"):
        use.retire(keep, "FusedAdamW")
    assert keep == [held]
    uncaptured = DeviceUse(7, None, [], capturing=lambda: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        uncaptured.retire(keep, "FusedAdamW")
    assert keep == [held]


def _captured(opt):
    """Marks the optimizer's plan as captured in a graph (what a capture on a GPU records)."""
    plan = opt._plan
    plan.device_use = DeviceUse(0, None, [], capturing=lambda: True)
    plan.device_use.before_run(FakeStream(0), lambda: [plan])
    return plan


def test_a_captured_plan_outlives_load_state_dict_and_rebuilds():
    p = torch.nn.Parameter(torch.ones(5))
    opt = fastopt.FusedAdamW([p], lr=0.1)
    p.grad = torch.ones(5)
    opt.step()
    first = _captured(opt)
    with pytest.warns(RuntimeWarning, match="captured in a CUDA graph"):
        opt.load_state_dict(opt.state_dict())
    assert opt._plan is None and opt._graph_held == [[first]]
    opt.step()
    second = _captured(opt)
    q = torch.nn.Parameter(torch.ones(3))
    q.grad = torch.ones(3)
    opt.add_param_group({"params": [q]})
    with pytest.warns(RuntimeWarning, match="launch table is now rebuilt"):
        opt.step()  # a structural change: a new plan
    assert opt._plan is not second and opt._graph_held == [[first], [second]]


def test_a_captured_averaging_plan_outlives_its_rebuild():
    """The sibling in the fused EMA: an averaged model's table rebuilt after a capture (an
    average re-pointed) keeps the old plan's tensors for the graph."""
    avg, src = torch.zeros(5), torch.ones(5)
    table = averaging.AveragingTable([(avg, src, averaging.AVERAGE)])
    table.update("ema", 0.5)
    first = _captured(table)
    avg.data = torch.full((5,), 3.0)  # the average moved to another storage: a rebuild
    with pytest.warns(RuntimeWarning, match="AveragedModel: a step of this optimizer"):
        table.update("ema", 0.5)
    assert table._plan is not first and table._graph_held == [[first]]
    assert torch.equal(avg, torch.full((5,), 2.0))  # halfway from 3 to the source's 1


# ---- 7. launch variants under the emulation ---------------------------------------------------


@pytest.fixture
def variants():
    saved = SIMT.cuda_variants()
    yield lambda **kw: SIMT.set_cuda_variants(**kw)
    SIMT.set_cuda_variants(**saved)


def _train(module, name, kwargs, shapes, steps=3, **step_kwargs):
    with engine(module):
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
        opt = getattr(fastopt, name)(params, **kwargs)
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g)
            if step_kwargs:
                opt.fused_step(**step_kwargs)
            else:
                opt.step()
    return params, opt


SHAPES = [(70_001,), (3,), (64, 65), (1,)]

BOUNDS = [b for b in SIMT.cuda_variants_built()["update_bounds"][1:]]


def test_the_emulation_has_every_variant():
    built = SIMT.cuda_variants_built()
    assert built["update_bounds"][0] == (512, 1) and len(built["update_bounds"]) >= 3
    assert built["table_tiers"] == 3


@pytest.mark.parametrize("bounds", BOUNDS, ids=lambda b: f"{b[0]}x{b[1]}")
@pytest.mark.parametrize("case", ["adamw", "sgd_nesterov", "lion"])
def test_update_bounds_are_bitwise_the_default(variants, bounds, case):
    name, kwargs = CASES[case]
    reference = _train(CPU, name, kwargs, SHAPES)
    variants(update_threads=bounds[0], update_min_blocks=bounds[1])
    params, opt = _train(SIMT, name, kwargs, SHAPES)
    updates = [r for r in opt._plan.engine.launches() if r["kernel"].startswith("update")]
    assert updates and all(r["threads"] == bounds[0] for r in updates)
    for a, b in zip(params, reference[0]):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("case", ["adamw", "lars", "lamb"])
def test_tiered_tables_pass_smaller_parameters_and_change_no_bit(variants, case):
    name, kwargs = CASES[case]
    full = _train(SIMT, name, kwargs, SHAPES, max_norm=1.0)
    full_bytes = {r["kernel"]: r["param_bytes"] for r in full[1]._plan.engine.launches()}
    variants(tiered=1)
    params, opt = _train(SIMT, name, kwargs, SHAPES, max_norm=1.0)
    records = opt._plan.engine.launches()
    for r in records:
        if r["kernel"] != "pipeline":  # 4 tensors: the smallest tier of every launch struct
            assert r["param_bytes"] * 8 < full_bytes[r["kernel"]], r
    for a, b in zip(params, full[0]):
        assert torch.equal(a.detach(), b.detach())


def test_tiers_hold_the_launches_they_are_picked_for(variants):
    """Launches of 1, 9 and 60 tensors: each struct just big enough, the same results."""
    variants(tiered=1)
    shapes = [(5,)] * 60
    runs = []
    for n in (1, 9, 60):
        params, opt = _train(SIMT, "FusedAdam", {"lr": 0.1}, shapes[:n])
        [update] = [r for r in opt._plan.engine.launches() if r["kernel"].startswith("update")]
        assert update["tensors"] == n
        runs.append((update["param_bytes"], params))
    assert runs[0][0] < runs[1][0] < runs[2][0] <= SIMT.build_info()["cuda_param_bytes"]
    reference = _train(CPU, "FusedAdam", {"lr": 0.1}, shapes)[0]
    for a, b in zip(runs[2][1], reference):
        assert torch.equal(a.detach(), b.detach())


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0])
def test_two_level_combine_of_the_total_norm(variants, norm_type):
    kw = dict(max_norm=0.5, norm_type=norm_type)
    results = []
    for segment in (0, 2, 3):
        variants(combine_segment=segment)
        norm = torch.zeros(())
        params, opt = _train(SIMT, "FusedSGD", {"lr": 0.1}, SHAPES, norm_out=norm, **kw)
        kernels = [r["kernel"] for r in opt._plan.engine.launches(max_norm=0.5)]
        assert ("combine_partials" in kernels) == (segment > 0)
        results.append((norm.item(), params))
    cpu_norm = torch.zeros(())
    cpu = _train(CPU, "FusedSGD", {"lr": 0.1}, SHAPES, norm_out=cpu_norm, **kw)
    for value, params in results:
        assert value == pytest.approx(cpu_norm.item(), rel=1e-6)
        for a, b in zip(params, cpu[0]):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-6, atol=1e-7)
    if norm_type == math.inf:  # a max: the same in any tree
        assert len({value for value, _ in results}) == 1


def test_variants_are_checked_against_the_build(variants):
    with pytest.raises(ValueError, match="were not compiled; this build has: 512,1"):
        variants(update_threads=128, update_min_blocks=7)
    with pytest.raises(ValueError, match="one launch variant at a time"):
        variants(update_threads=BOUNDS[0][0], update_min_blocks=BOUNDS[0][1], tiered=1)
    assert SIMT.cuda_variants() == dict(
        update_threads=0, update_min_blocks=0, tiered=0, combine_segment=0
    )


def test_variants_from_the_environment():
    code = (
        "from fastopt import _C_simt as S; import json; "
        "print(json.dumps([S.cuda_variants(), S.cuda_variants_built()['table_tiers']]))"
    )
    env = fastopt_subprocess_env()
    env.update(
        FASTOPT_CUDA_UPDATE_BOUNDS="128,1",
        FASTOPT_CUDA_TABLES="full",
        FASTOPT_CUDA_COMBINE_SEGMENT="64",
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)[0] == dict(
        update_threads=128, update_min_blocks=1, tiered=0, combine_segment=64
    )
    env["FASTOPT_CUDA_TABLES"] = "small"
    bad = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd="/"
    )
    assert bad.returncode != 0 and "FASTOPT_CUDA_TABLES must be 'full' or 'tiered'" in bad.stderr


# ---- §2. the GPU check script, without a GPU ---------------------------------------------------


def _gpu_check(tmp_path, *args, env=None):
    env = env or fastopt_subprocess_env()
    env["CUDA_VISIBLE_DEVICES"] = ""  # no GPU here, and none used on a machine that has one
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--out", str(tmp_path), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_gpu_check_without_a_gpu_says_so_per_stage(tmp_path):
    stages = "env,smoke,pytest,checks,bench,sanitizer"
    out = _gpu_check(tmp_path, "--stages", stages)
    assert out.returncode == 2, out.stdout + out.stderr  # nothing failed, some could not run
    summary = json.loads((tmp_path / "summary.json").read_text())
    status = {s["stage"]: s["status"] for s in summary["stages"]}
    assert list(status) == stages.split(",")
    assert status.pop("env") == "ok"
    assert set(status.values()) == {"no GPU"}
    for stage in stages.split(","):
        assert (tmp_path / f"{stage}.log").exists()
    env = json.loads((tmp_path / "env.json").read_text())
    assert env["torch"] == torch.__version__ and env["gpu"].startswith("none")
    assert "summary:" in out.stdout and "no GPU" in (tmp_path / "summary.txt").read_text()


def test_a_failing_stage_does_not_stop_the_later_ones(tmp_path):
    env = fastopt_subprocess_env()
    env["PATH"] = "/nonexistent"  # no nvcc, no cmake
    env.pop("CUDACXX", None)
    out = _gpu_check(tmp_path, "--stages", "build,env", env=env)
    assert out.returncode == 1
    stages = json.loads((tmp_path / "summary.json").read_text())["stages"]
    assert [(s["stage"], s["status"]) for s in stages] == [("build", "FAILED"), ("env", "ok")]
    assert "no CUDA compiler" in stages[0]["detail"]


def test_a_stage_command_is_killed_at_its_timeout(tmp_path):
    sys.path.insert(0, str(ROOT / "tools"))
    try:
        import gpu_check
    finally:
        sys.path.pop(0)
    ctx = gpu_check.Context.__new__(gpu_check.Context)
    log = tmp_path / "slow.log"
    rc = ctx.run([sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                 log, timeout=2)  # fmt: skip
    assert rc is None
    text = log.read_text()
    assert "started" in text and "killed after 2 s" in text
