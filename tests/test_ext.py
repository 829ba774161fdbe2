"""fastopt.info() / `fastopt info` report what was built."""

from __future__ import annotations

import io
import json
import platform
import subprocess
import sys

import torch
from conftest import fastopt_subprocess_env

import fastopt


def test_info_prints_and_returns_versions():
    out = io.StringIO()
    info = fastopt.info(file=out)
    text = out.getvalue()
    assert info["fastopt"] == fastopt.__version__ and info["torch"] == torch.__version__
    assert info["python"] == platform.python_version()
    assert "cpu" in info["backends"]
    assert info["cpu_isa"] in ("baseline", "avx2", "avx512")
    assert info["threads"] == torch.get_num_threads()
    for key in ("fastopt", "torch", "python", "backends", "cpu_isa", "threads"):
        assert key in text


def test_info_command(tmp_path):
    env = fastopt_subprocess_env()
    out = subprocess.run(
        [sys.executable, "-m", "fastopt", "info", "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    data = json.loads(out.stdout)
    assert "cpu" in data["backends"] and data["fastopt"] == fastopt.__version__


def test_single_openmp_runtime_shared_with_torch():
    """_C is loaded after torch, so both use torch's bundled libgomp (one thread pool)."""
    maps = open("/proc/self/maps").read().splitlines()
    gomp = {line.split()[-1] for line in maps if "libgomp" in line}
    assert len(gomp) == 1, gomp
