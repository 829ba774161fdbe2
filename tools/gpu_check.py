#!/usr/bin/env python3
"""The first GPU run of the CUDA engine, as one command (tools/gpu_check.sh runs this).

On a machine with an NVIDIA GPU, torch (a CUDA build), nvcc and this repository checked out::

    tools/gpu_check.sh                     # writes gpu_check/<date>/, about 5-8 min on an H100
    tools/gpu_check.sh --out /tmp/first    # another folder
    tools/gpu_check.sh --stages env,smoke  # some stages only (after a build)

Stages, in order, each under its own timeout (and the whole under --budget, 8 min), each writing
its output to <out>/<stage>.log; a failing stage does not stop the later ones:

  env        GPU, driver, torch and its CUDA, nvcc, compute-sanitizer
  build      fastopt._C with the CUDA engine (and its launch variants) and fastopt._C_simt from
             this checkout, for this GPU's architecture, with the ptxas register/spill table
             (tools/check_cuda_build.py); the modules are copied into fastopt/
  smoke      one FusedAdamW step on the GPU against torch's fused AdamW; `fastopt info`
  pytest     pytest -m cuda (every GPU test)
  checks     tools/gpu_checks.py: no host sync seen from outside, kernel launches per step
             (profiler) against torch fused/foreach, GB/s against a 4 GB copy_, misaligned and
             bf16 equality, graph capture and replay with a skipped inf step, the launch
             variants, a 7B-parameter step extrapolated from a slice (<out>/checks.json)
  bench      fastopt bench --device cuda --pipeline (GPT-2 and ResNet-50 paramwise)
  sanitizer  compute-sanitizer memcheck, racecheck and synccheck on tools/gpu_sanitize_step.py

Without a GPU every stage that needs one reports "no GPU" and the others run (the build needs
nvcc only). The summary is printed and written to <out>/summary.json; the exit status is 0 when
every stage passed, 1 when one failed or timed out, 2 when none failed but some could not run
(no GPU, no compute-sanitizer).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

#: (name, timeout in seconds): the defaults fit 8 minutes on one H100/H200 with 16+ cores
STAGES: dict[str, int] = {
    "env": 30,
    "build": 240,
    "smoke": 60,
    "pytest": 120,
    "checks": 120,
    "bench": 90,
    "sanitizer": 150,
}
OK, FAILED, TIMEOUT, NO_GPU, NOT_RUN = "ok", "FAILED", "TIMEOUT", "no GPU", "not run"


@dataclass
class Result:
    stage: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    log: str = ""
    figures: dict = field(default_factory=dict)


class Context:
    """The run's options, output folder and what earlier stages found."""

    def __init__(self, out: Path, args: argparse.Namespace) -> None:
        self.out = out
        self.args = args
        self.gpu = gpu_visible()
        self.deadline = time.monotonic() + args.budget

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def run(self, cmd: list[str], log: Path, timeout: float, append: bool = False) -> int | None:
        """Runs cmd with stdout and stderr into log; None when it timed out (then killed)."""
        with open(log, "a" if append else "w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            try:
                proc = subprocess.Popen(
                    cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=self.env(),
                    start_new_session=True,
                )  # fmt: skip
            except FileNotFoundError as exc:
                f.write(f"{exc}\n")
                return 127
            try:
                return proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)  # the command and whatever it started
                proc.wait()
                f.write(f"\n[gpu_check: killed after {timeout:.0f} s]\n")
                return None


def gpu_visible() -> str:
    """'' when no GPU can be used from torch, else its name."""
    try:
        import torch
    except ImportError:
        return ""
    if not torch.cuda.is_available():
        return ""
    return torch.cuda.get_device_name(0)


def no_gpu_reason() -> str:
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return "torch.cuda.is_available() is False (no GPU or no driver)"


def tail(path: Path, n: int = 3) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-400:]


# ---- stages -----------------------------------------------------------------------------------


def stage_env(ctx: Context, log: Path, timeout: float) -> Result:
    info: dict = {}
    lines = []
    cmds = {
        "nvidia-smi": ["nvidia-smi", "--query-gpu=name,driver_version,compute_cap,memory.total",
                       "--format=csv,noheader"],
        "nvcc": ["nvcc", "--version"],
        "compute-sanitizer": ["compute-sanitizer", "--version"],
        "cmake": ["cmake", "--version"],
    }  # fmt: skip
    for name, cmd in cmds.items():
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout / 5)
            text = (out.stdout + out.stderr).strip()
            lines_out = text.splitlines() if out.returncode == 0 and text else []
            # nvcc: its "release" line; the others: the first (nvidia-smi: GPU 0)
            pick = [x for x in lines_out if "release" in x] or lines_out[:1]
            info[name] = pick[0].strip() if pick else "none"
        except (OSError, subprocess.TimeoutExpired) as exc:
            text, info[name] = str(exc), "none"
        lines.append(f"## {name}\n{text}\n")
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = str(torch.version.cuda)
        info["gpu"] = ctx.gpu or f"none ({no_gpu_reason()})"
        if ctx.gpu:
            cc = torch.cuda.get_device_capability(0)
            info["compute_capability"] = f"{cc[0]}.{cc[1]}"
            info["gpus"] = str(torch.cuda.device_count())
            free, total = torch.cuda.mem_get_info()
            info["memory_gb"] = f"{free / 2**30:.0f} free of {total / 2**30:.0f}"
    except ImportError:
        info["torch"] = "not installed"
    info["python"] = sys.version.split()[0]
    info["cpus"] = str(os.cpu_count())
    try:
        git = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
                             capture_output=True, text=True)  # fmt: skip
        info["commit"] = git.stdout.strip() or "unknown"
    except OSError:
        info["commit"] = "unknown (no git)"
    lines.append("## summary\n" + json.dumps(info, indent=2))
    log.write_text("\n".join(lines) + "\n")
    (ctx.out / "env.json").write_text(json.dumps(info, indent=2) + "\n")
    detail = f"{info.get('gpu')}; driver {info.get('nvidia-smi', 'none')}; torch {info['torch']}"
    return Result("env", OK, detail=detail, figures=info)


def cuda_archs(ctx: Context) -> str:
    """This GPU's architecture (real code only: the build is for this machine), or the
    project's default list without a GPU."""
    if ctx.args.archs:
        return ctx.args.archs
    if ctx.gpu:
        import torch

        major, minor = torch.cuda.get_device_capability(0)
        return f"{major}{minor}-real"
    return "80-real;90-real;90-virtual"


def stage_build(ctx: Context, log: Path, timeout: float) -> Result:
    if shutil.which("nvcc") is None and not os.environ.get("CUDACXX"):
        log.write_text("no nvcc on PATH and no CUDACXX\n")
        return Result("build", FAILED, detail="no CUDA compiler (nvcc on PATH or CUDACXX)")
    try:
        import pybind11
        import torch
    except ImportError as exc:
        log.write_text(f"{exc}\n")
        return Result("build", FAILED, detail=str(exc))
    start = time.monotonic()
    build_dir = Path(ctx.args.build_dir)
    archs = cuda_archs(ctx)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    prefix = f"{torch.utils.cmake_prefix_path};{pybind11.get_cmake_dir()}"
    configure = [
        "cmake", "-S", str(ROOT), "-B", str(build_dir), *generator,
        "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}",
        f"-DPython_EXECUTABLE={PY}", "-DFASTOPT_CUDA=on", "-DFASTOPT_SIMT=ON",
        "-DFASTOPT_CUDA_PTXAS_VERBOSE=ON", "-DFASTOPT_CUDA_VARIANTS=ON",
        f"-DFASTOPT_CUDA_ARCHS={archs}",
    ]  # fmt: skip
    rc = ctx.run(configure, log, timeout)
    if rc != 0:
        status = TIMEOUT if rc is None else FAILED
        return Result("build", status, detail="cmake configure failed: " + tail(log))
    jobs = str(ctx.args.jobs or os.cpu_count() or 2)
    # a clean build: the ptxas table must cover every kernel
    left = timeout - (time.monotonic() - start)
    ctx.run(["cmake", "--build", str(build_dir), "--target", "clean"], log, left, append=True)
    left = timeout - (time.monotonic() - start)
    rc = ctx.run(["cmake", "--build", str(build_dir), "--parallel", jobs, "--", "-v"]
                 if generator else ["cmake", "--build", str(build_dir), "--parallel", jobs],
                 log, left, append=True)  # fmt: skip
    seconds = time.monotonic() - start
    if rc != 0:
        status = TIMEOUT if rc is None else FAILED
        return Result("build", status, seconds, detail="build failed: " + tail(log))
    built = sorted(build_dir.glob("_C*.so"))
    for so in built:  # a new file renamed over the old: a process that loaded it keeps its copy
        tmp = ROOT / "fastopt" / f".{so.name}.tmp"
        shutil.copy2(so, tmp)
        os.replace(tmp, ROOT / "fastopt" / so.name)
    table = ctx.out / "ptxas.txt"
    check = [PY, str(ROOT / "tools" / "check_cuda_build.py"), "--log", str(log), "--no-import",
             "--archs", archs, "--verbose"]  # fmt: skip
    rc = ctx.run(check, table, max(10.0, timeout - seconds))
    kernels = spills = 0
    max_regs = 0
    for line in table.read_text(errors="replace").splitlines():
        m = re.match(r"\s+sm_\d+\s+(\d+) regs", line)
        if m:
            kernels += 1
            max_regs = max(max_regs, int(m[1]))
        if "spill stores" in line:
            spills += 1
    figures = dict(archs=archs, seconds=round(seconds), kernels=kernels, max_registers=max_regs,
                   modules=[so.name for so in built])  # fmt: skip
    detail = f"{archs}: {kernels} kernels, at most {max_regs} registers, {spills} with spills"
    detail += f"; {', '.join(figures['modules'])} copied into fastopt/ ({seconds:.0f} s)"
    return Result("build", OK if rc == 0 else FAILED, seconds, detail, figures=figures)


SMOKE = r"""
import torch, fastopt
from fastopt import _C
print(fastopt.info())
assert _C.engine_for("cuda") == "cuda", "fastopt._C has no CUDA engine"
torch.manual_seed(0)
ps = [torch.randn(n, device="cuda", requires_grad=True) for n in (1000, 70_001, 3)]
qs = [p.detach().clone().requires_grad_(True) for p in ps]
for p, q in zip(ps, qs):
    p.grad = torch.randn_like(p)
    q.grad = p.grad.clone()
opt = fastopt.FusedAdamW(ps, lr=1e-2, weight_decay=0.1)
ref = torch.optim.AdamW(qs, lr=1e-2, weight_decay=0.1, fused=True)
opt.step()
ref.step()
torch.cuda.synchronize()
assert opt._plan.engine.backend == "cuda"
diff = max((p - q).abs().max().item() for p, q in zip(ps, qs))
print(f"one step on {torch.cuda.get_device_name(0)}: max |fastopt - torch fused| = {diff:.3g}")
assert diff < 1e-5, diff
"""


def needs_gpu(fn: Callable[[Context, Path, float], Result]):
    def stage(ctx: Context, log: Path, timeout: float) -> Result:
        if not ctx.gpu:
            reason = no_gpu_reason()
            log.write_text(f"not run: no GPU ({reason})\n")
            return Result(fn.__name__.removeprefix("stage_"), NO_GPU, detail=reason)
        return fn(ctx, log, timeout)

    stage.__name__ = fn.__name__
    return stage


def _command_stage(name: str, cmd: list[str], ctx: Context, log: Path, timeout: float) -> Result:
    start = time.monotonic()
    rc = ctx.run(cmd, log, timeout)
    seconds = time.monotonic() - start
    if rc is None:
        return Result(name, TIMEOUT, seconds, f"killed after {timeout:.0f} s: " + tail(log))
    return Result(name, OK if rc == 0 else FAILED, seconds, tail(log, 2))


@needs_gpu
def stage_smoke(ctx: Context, log: Path, timeout: float) -> Result:
    return _command_stage("smoke", [PY, "-c", SMOKE], ctx, log, timeout)


@needs_gpu
def stage_pytest(ctx: Context, log: Path, timeout: float) -> Result:
    junit = ctx.out / "pytest.xml"
    cmd = [PY, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider", "-rfEs",
           f"--junitxml={junit}", "tests"]  # fmt: skip
    result = _command_stage("pytest", cmd, ctx, log, timeout)
    m = re.findall(r"(\d+) (passed|failed|skipped|error|errors)", log.read_text(errors="replace"))
    result.figures = {kind: int(n) for n, kind in m}
    return result


@needs_gpu
def stage_checks(ctx: Context, log: Path, timeout: float) -> Result:
    out = ctx.out / "checks.json"
    cmd = [PY, str(ROOT / "tools" / "gpu_checks.py"), "--json", str(out)]
    result = _command_stage("checks", cmd, ctx, log, timeout)
    if out.exists():
        data = json.loads(out.read_text())
        failed = [c["name"] for c in data.get("checks", []) if not c.get("ok")]
        result.figures = {"failed_checks": failed, "summary": data.get("summary", {})}
        if failed:
            result.status = FAILED
            result.detail = "failed: " + ", ".join(failed)
    return result


@needs_gpu
def stage_bench(ctx: Context, log: Path, timeout: float) -> Result:
    cmd = [PY, "-m", "fastopt", "bench", "--device", "cuda", "--pipeline",
           "--set", "gpt2", "resnet50-paramwise", "--optim", "adamw", "sgd", "lamb",
           "--repeat", "10", "--markdown", "--json", str(ctx.out / "bench.json")]  # fmt: skip
    return _command_stage("bench", cmd, ctx, log, timeout)


@needs_gpu
def stage_sanitizer(ctx: Context, log: Path, timeout: float) -> Result:
    tool = shutil.which("compute-sanitizer")
    if tool is None:
        cuda_home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
        candidate = Path(cuda_home) / "bin" / "compute-sanitizer"
        tool = str(candidate) if candidate.exists() else None
    if tool is None:
        log.write_text("compute-sanitizer not found (CUDA toolkit's bin/)\n")
        return Result("sanitizer", NOT_RUN, detail="compute-sanitizer not found")
    start = time.monotonic()
    figures: dict = {}
    status = OK
    script = str(ROOT / "tools" / "gpu_sanitize_step.py")
    tools = ("memcheck", "racecheck", "synccheck")
    for i, name in enumerate(tools):
        left = timeout - (time.monotonic() - start)
        share = left / (len(tools) - i)
        rc = ctx.run([tool, "--tool", name, "--error-exitcode", "3", PY, script], log, share,
                     append=True)  # fmt: skip
        text = log.read_text(errors="replace")
        counts = re.findall(r"ERROR SUMMARY: (\d+) error", text)
        figures[name] = int(counts[-1]) if counts and rc is not None else None
        if rc is None:
            status = TIMEOUT
        elif rc != 0 and status == OK:
            status = FAILED
    seconds = time.monotonic() - start
    detail = ", ".join(
        f"{k}: {'timeout' if v is None else f'{v} errors'}" for k, v in figures.items()
    )
    return Result("sanitizer", status, seconds, detail, figures=figures)


STAGE_FUNCS = {
    "env": stage_env,
    "build": stage_build,
    "smoke": stage_smoke,
    "pytest": stage_pytest,
    "checks": stage_checks,
    "bench": stage_bench,
    "sanitizer": stage_sanitizer,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    parser.add_argument("--out", default=str(ROOT / "gpu_check" / stamp), help="output folder")
    parser.add_argument("--stages", default=",".join(STAGES), help="comma-separated stages")
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for all stages")
    parser.add_argument(
        "--timeout", action="append", default=[], metavar="STAGE=S", help="a stage's timeout"
    )
    parser.add_argument("--archs", help="FASTOPT_CUDA_ARCHS of the build (default: this GPU's)")
    parser.add_argument("--jobs", type=int, help="build jobs (default: all CPUs)")
    parser.add_argument("--build-dir", default=str(ROOT / "build" / "gpu-check"))
    args = parser.parse_args(argv)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stages {unknown}; known: {', '.join(STAGES)}")
    timeouts = dict(STAGES)
    for item in args.timeout:
        name, _, value = item.partition("=")
        if name not in STAGES or not value:
            parser.error(f"--timeout takes STAGE=SECONDS, got {item!r}")
        timeouts[name] = int(value)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = Context(out, args)
    print(f"gpu_check: {ctx.gpu or 'no GPU (' + no_gpu_reason() + ')'}; writing {out}")
    results: list[Result] = []
    for i, name in enumerate(stages):
        left = ctx.deadline - time.monotonic()
        # later stages keep a few seconds each, so one slow stage cannot starve them all
        timeout = min(timeouts[name], left - 5 * (len(stages) - i - 1))
        log = out / f"{name}.log"
        if timeout < 5:
            result = Result(name, NOT_RUN, detail="the time budget was spent")
        else:
            print(f"[{name}] (timeout {timeout:.0f} s) ...", flush=True)
            start = time.monotonic()
            try:
                result = STAGE_FUNCS[name](ctx, log, timeout)
            except Exception as exc:  # a bug in a stage must not stop the others
                result = Result(name, FAILED, detail=f"{type(exc).__name__}: {exc}")
            result.seconds = round(time.monotonic() - start, 1)
        result.log = str(log.relative_to(out)) if log.exists() else ""
        results.append(result)
        print(f"[{name}] {result.status} ({result.seconds:.0f} s) {result.detail}", flush=True)

    width = max(len(r.stage) for r in results)
    lines = [f"{r.stage:<{width}}  {r.status:<8} {r.seconds:6.0f} s  {r.detail}" for r in results]
    total = sum(r.seconds for r in results)
    summary = "\n".join(["", "summary:", *lines, f"total {total:.0f} s; output in {out}"])
    print(summary)
    (out / "summary.txt").write_text(summary.lstrip() + "\n")
    (out / "summary.json").write_text(
        json.dumps(
            {"gpu": ctx.gpu, "total_s": total, "stages": [asdict(r) for r in results]}, indent=2
        )
        + "\n"  # fmt: skip
    )
    if any(r.status in (FAILED, TIMEOUT) for r in results):
        return 1
    return 0 if all(r.status == OK for r in results) else 2


if __name__ == "__main__":
    sys.exit(main())
