#!/usr/bin/env python3
"""CI check of the CUDA engine's nvcc build: no compiler warnings, no register spills.

Builds fastopt._C with the CUDA engine and ``-Xptxas -v`` (FASTOPT_CUDA_PTXAS_VERBOSE=ON) in its
own build directory, or parses the log of a build that already did (``--log``, e.g. the output
of ``pip install -v . -C cmake.define.FASTOPT_CUDA_PTXAS_VERBOSE=ON``), then:

* fails on any warning of nvcc, ptxas or the host compiler in the build output;
* fails on any kernel with spill stores or loads, for any architecture;
* fails when an architecture that was asked for has no kernels, or when the module (built here,
  or with ``--log`` the installed fastopt._C) does not load or does not report the CUDA backend;
* prints registers, stack and shared memory per kernel and the build time.

Usage:
    python tools/check_cuda_build.py                       # build in build/cuda-check
    python tools/check_cuda_build.py --archs "80-real;90-real;90-virtual" --jobs 2
    python tools/check_cuda_build.py --variants            # with the launch variants
    python tools/check_cuda_build.py --log build.log       # parse an existing verbose build
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ARCHS = "80-real;90-real;90-virtual"

ENTRY = re.compile(
    r"ptxas info\s*: Compiling entry function '(?P<name>[^']+)' for '(?P<arch>sm_\d+a?)'"
)
PROPS = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<stores>\d+) bytes spill stores, "
    r"(?P<loads>\d+) bytes spill loads"
)
USED = re.compile(r"ptxas info\s*: Used (?P<regs>\d+) registers(?P<rest>.*)")
# gcc "file:line: warning:", nvcc/ptxas "nvcc warning :", cudafe "warning #177-D:"
WARNING = re.compile(
    r"(: warning\b|\b(nvcc|ptxas|nvlink|fatbinary) warning\b|\bwarning #\d+)", re.I
)


@dataclass
class Kernel:
    name: str
    arch: str
    registers: int = -1
    stack: int = 0
    spill_stores: int = 0
    spill_loads: int = 0
    smem: str = ""


def parse(log: str) -> tuple[list[Kernel], list[str]]:
    """Kernels with their ptxas figures, and the warning lines of the build output."""
    kernels: list[Kernel] = []
    warnings: list[str] = []
    current: Kernel | None = None
    props_for: str | None = None
    for line in log.splitlines():
        if WARNING.search(line):
            warnings.append(line.strip())
        m = ENTRY.search(line)
        if m:
            current = Kernel(m["name"], m["arch"])
            kernels.append(current)
            continue
        if "Function properties for" in line:
            props_for = line.split("Function properties for", 1)[1].strip()
            continue
        m = PROPS.search(line)
        if m and current is not None and props_for == current.name:
            current.stack = int(m["stack"])
            current.spill_stores = int(m["stores"])
            current.spill_loads = int(m["loads"])
            continue
        if m and props_for is not None and (current is None or props_for != current.name):
            # a device function's own frame (not inlined): a spill there is a spill too
            if int(m["stores"]) or int(m["loads"]):
                kernels.append(
                    Kernel(
                        props_for,
                        current.arch if current else "?",
                        0,
                        int(m["stack"]),
                        int(m["stores"]),
                        int(m["loads"]),
                    )
                )
            continue
        m = USED.search(line)
        if m and current is not None and current.registers < 0:
            current.registers = int(m["regs"])
            smem = re.search(r"(\d+) bytes smem", m["rest"])
            current.smem = smem.group(1) if smem else "0"
    return kernels, warnings


# kernels whose spills are reported but do not fail the check (see where it is read)
KNOWN_SPILLS = ("void update_q8_kernel<",)


def demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if tool is None:
        return names
    out = subprocess.run([tool], input="\n".join(names), capture_output=True, text=True).stdout
    pretty = out.splitlines()
    if len(pretty) != len(names):
        return names
    return [re.sub(r"fastopt::(cuda::)?", "", p) for p in pretty]


def build(build_dir: str, archs: str, jobs: int, variants: bool = False) -> str:
    try:
        import pybind11
    except ImportError:
        sys.exit("check_cuda_build: needs pybind11 in this environment (pip install pybind11)")
    nvcc = os.environ.get("CUDACXX") or shutil.which("nvcc")
    if nvcc is None:
        sys.exit("check_cuda_build: no CUDA compiler (put nvcc on PATH or set CUDACXX)")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = [
        "cmake", "-S", ROOT, "-B", build_dir, *generator,
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        f"-DPython_EXECUTABLE={sys.executable}",
        "-DFASTOPT_CUDA=on", "-DFASTOPT_SIMT=OFF", "-DFASTOPT_CUDA_PTXAS_VERBOSE=ON",
        f"-DFASTOPT_CUDA_ARCHS={archs}", f"-DFASTOPT_CUDA_VARIANTS={'ON' if variants else 'OFF'}",
    ]  # fmt: skip
    subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["cmake", "--build", build_dir, "--target", "clean"], check=True,
                   stdout=subprocess.DEVNULL)  # fmt: skip
    start = time.monotonic()
    result = subprocess.run(
        ["cmake", "--build", build_dir, "--target", "_C", "--parallel", str(jobs)],
        capture_output=True, text=True,
    )  # fmt: skip
    seconds = time.monotonic() - start
    log = result.stdout + result.stderr
    with open(os.path.join(build_dir, "cuda_check.log"), "w") as f:
        f.write(log)
    if result.returncode != 0:
        print(log[-20000:])
        sys.exit(f"check_cuda_build: the build failed (log: {build_dir}/cuda_check.log)")
    print(f"build of fastopt._C with CUDA ({archs}): {seconds:.0f} s with {jobs} jobs")
    return log


def check_module(build_dir: str | None) -> list[str]:
    """The built (or, with --log, the installed) module loads without a GPU and reports CUDA."""
    try:
        if build_dir is None:
            module = importlib.import_module("fastopt._C")
        else:
            found = [f for f in os.listdir(build_dir) if f.startswith("_C.") and f.endswith(".so")]
            if not found:
                return ["the built module _C*.so was not found"]
            spec = importlib.util.spec_from_file_location("_C", os.path.join(build_dir, found[0]))
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
    except ImportError as exc:
        return [f"the module does not load: {exc}"]
    info = module.build_info()
    print(f"module: backends {info['backends']}, CUDA {info.get('cuda_runtime')}, "
          f"architectures {info.get('cuda_archs')}")  # fmt: skip
    if "cuda" not in info["backends"]:
        return ["the built module does not report the cuda backend"]
    return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", help="parse this build log instead of building")
    parser.add_argument("--build-dir", default=os.path.join(ROOT, "build", "cuda-check"))
    parser.add_argument("--archs", default=DEFAULT_ARCHS, help="CMAKE_CUDA_ARCHITECTURES list")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--verbose", action="store_true", help="list every kernel")
    parser.add_argument(
        "--variants",
        action="store_true",
        help="build the launch variants too (FASTOPT_CUDA_VARIANTS)",
    )
    parser.add_argument(
        "--no-import", action="store_true", help="with --log: do not check the installed fastopt._C"
    )
    args = parser.parse_args()

    problems: list[str] = []
    if args.log:
        with open(args.log, errors="replace") as f:
            log = f.read()
        # a pip log: only fastopt's own build (other packages' output is not ours to judge)
        start = log.find("Building wheel for fastopt")
        end = log.find("Created wheel for fastopt", start)
        if start >= 0:
            log = log[start : end if end >= 0 else len(log)]
        if not args.no_import:
            problems += check_module(None)
    else:
        log = build(args.build_dir, args.archs, args.jobs, args.variants)
        problems += check_module(args.build_dir)

    kernels, warnings = parse(log)
    if not kernels:
        problems.append("no ptxas output: build with FASTOPT_CUDA_PTXAS_VERBOSE=ON")
    wanted = {f"sm_{a.split('-')[0]}" for a in args.archs.split(";") if not a.endswith("-virtual")}
    built = {k.arch for k in kernels}
    for arch in sorted(wanted - built):
        problems.append(f"no kernels compiled for {arch}")

    pretty = demangle([k.name for k in kernels])
    width = min(max((len(p) for p in pretty), default=10), 110)
    rows = sorted(zip(kernels, pretty), key=lambda kp: (-kp[0].registers, kp[1], kp[0].arch))
    shown = rows if args.verbose else rows[:12]
    print(f"{len(kernels)} kernels; highest register counts:" if not args.verbose else "kernels:")
    for k, p in shown:
        print(f"  {k.arch:7} {k.registers:4} regs {k.stack:5} B stack {k.smem:>5} B smem  "
              f"{p[:width]}")  # fmt: skip
    known: list[str] = []
    for k, p in zip(kernels, pretty):
        if k.spill_stores or k.spill_loads:
            line = f"{k.arch} {p}: {k.spill_stores} bytes spill stores, {k.spill_loads} bytes spill loads"
            # the only allowance: the 8-bit-state kernels of some ops spill (issue 14 is open on
            # it); listed on every run, and every other kernel must stay spill-free
            (known if p.startswith(KNOWN_SPILLS) else problems).append(line)
    if known:
        print(f"\nKNOWN (issue 14, {len(known)} kernels): spills in the 8-bit-state kernels")
        for line in known:
            print(f"  {line}")
    problems += [f"compiler warning: {w}" for w in warnings]
    if problems:
        print("\nFAILED:")
        for p in problems:
            print(f"  {p}")
        return 1
    print("OK: no warnings, no spills" + (" outside the known 8-bit kernels" if known else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
