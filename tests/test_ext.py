"""fastopt.info() / `fastopt info` report what was built."""

from __future__ import annotations

import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from conftest import fastopt_subprocess_env

import fastopt
from fastopt import _ext


def test_info_prints_and_returns_versions():
    out = io.StringIO()
    info = fastopt.info(file=out)
    text = out.getvalue()
    assert info["fastopt"] == fastopt.__version__ and info["torch"] == torch.__version__
    assert info["python"] == platform.python_version()
    assert "cpu" in info["backends"]
    # the chosen path is the best this CPU supports of those built (the list lives in cpu/api.h)
    assert info["cpu_isa"] == info["cpu_isas_supported"][-1]
    assert set(info["cpu_isas_supported"]) <= set(info["cpu_isas_built"])
    assert info["cpu_isas_built"][0] == "baseline"
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


def _info(backends, **extra):
    return {"fastopt": fastopt.__version__, "torch": "2.13.0+cpu", "backends": backends, **extra}


def test_cuda_line_says_plainly_whether_a_gpu_can_run_it():
    built = _info(["cpu", "cuda", "simt"], cuda_runtime="12.8 (static)", cuda_devices=0)
    assert (
        _ext.cuda_summary(built, torch_cuda=None)
        == "built with CUDA 12.8; no GPU visible (torch 2.13.0+cpu is a CPU-only build)"
    )
    assert _ext.cuda_summary(built, torch_cuda="12.8") == "built with CUDA 12.8; no GPU visible"
    two = {**built, "cuda_devices": 2}
    assert _ext.cuda_summary(two, torch_cuda="12.8") == "built with CUDA 12.8; 2 GPUs visible"
    assert _ext.cuda_summary({**built, "cuda_devices": 1}, "12.8").endswith("; 1 GPU visible")
    assert _ext.cuda_summary(_info(["cpu", "simt"]), torch_cuda=None).startswith("not built")


def test_info_text_has_a_cuda_line_and_json_keeps_the_counts():
    built = _info(["cpu", "cuda", "simt"], cuda_runtime="12.8 (static)", cuda_devices=0)
    built["cuda"] = _ext.cuda_summary(built, torch_cuda=None)
    lines = dict(line.split(None, 1) for line in _ext.format_info(built).splitlines())
    assert lines["backends"] == "cpu, cuda, simt"  # what was built, as scripts read it
    assert lines["cuda"].startswith("built with CUDA 12.8; no GPU visible")
    assert "cuda_devices" not in lines  # said in words by the cuda line; --json has it
    info = _ext.build_info()  # this machine's build
    assert info["cuda"] == _ext.cuda_summary(info, torch.version.cuda)
    assert list(info).index("cuda") == list(info).index("backends") + 1
    if "cuda" in info["backends"]:
        assert isinstance(info["cuda_devices"], int)


def _fake_checkout(root: Path, with_engine: bool = False) -> Path:
    """A clone's root: pyproject.toml, csrc/ and the fastopt package (engine only if asked)."""
    (root / "csrc").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'fastopt'\n")
    pkg = root / "fastopt"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    if with_engine:
        (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    return pkg


def _fake_install(site: Path, with_engine: bool = True) -> Path:
    """site-packages holding an installed fastopt distribution (dist-info and package)."""
    pkg = site / "fastopt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    if with_engine:
        (pkg / "_C.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    dist = site / f"fastopt-{fastopt.__version__}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: fastopt\nVersion: {fastopt.__version__}\n"
    )
    return pkg


def test_a_source_checkout_hiding_the_installed_package_is_detected(tmp_path):
    checkout = _fake_checkout(tmp_path / "clone")
    site = tmp_path / "venv" / "site-packages"
    installed = _fake_install(site)
    assert _ext.shadowed_install(checkout, path=[str(site)]) == installed.resolve()
    message = _ext.missing_engine_message(
        ImportError("No module named 'fastopt._C'"), checkout, path=[str(site)]
    )
    assert f"source checkout {checkout}" in message and str(installed.resolve()) in message
    assert "--no-python fastopt train" in message and "Rebuilding does not help" in message
    assert "pip install --force-reinstall" not in message  # the advice that would not help


def test_no_shadowing_reported_where_rebuilding_is_the_cure(tmp_path):
    site = tmp_path / "site"
    _fake_install(site)
    built_clone = _fake_checkout(tmp_path / "built", with_engine=True)  # has its own engine
    assert _ext.shadowed_install(built_clone, path=[str(site)]) is None
    not_a_clone = tmp_path / "other" / "fastopt"  # e.g. a broken site-packages copy
    not_a_clone.mkdir(parents=True)
    assert _ext.shadowed_install(not_a_clone, path=[str(site)]) is None
    clone = _fake_checkout(tmp_path / "clone")
    assert _ext.shadowed_install(clone, path=[str(tmp_path / "empty")]) is None  # not installed
    no_engine_site = tmp_path / "site2"
    _fake_install(no_engine_site, with_engine=False)  # installed, but built without the engine
    assert _ext.shadowed_install(clone, path=[str(no_engine_site)]) is None
    message = _ext.missing_engine_message(ImportError("x"), clone, path=[str(no_engine_site)])
    assert message.endswith(_ext.REBUILD_HINT)


def test_python_run_from_a_clone_root_says_it_imported_the_source_tree(tmp_path):
    """The real case: `python -c` in a clone's root imports ./fastopt (no engine built there)
    although an installed fastopt (here: the one under test, with its engine) is on the path."""
    real = Path(fastopt.__file__).resolve().parent
    clone = tmp_path / "clone"
    shutil.copytree(real, clone / "fastopt", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    (clone / "csrc").mkdir()
    (clone / "pyproject.toml").write_text("[project]\nname = 'fastopt'\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "fastopt").symlink_to(real)
    dist = site / f"fastopt-{fastopt.__version__}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: fastopt\nVersion: {fastopt.__version__}\n"
    )
    code = (
        "import torch, fastopt; info = fastopt.info()\n"
        "p = torch.zeros(2, requires_grad=True); p.grad = torch.ones(2)\n"
        "fastopt.FusedSGD([p], lr=0.1).step()"
    )
    env = dict(os.environ, PYTHONPATH=str(site))
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=clone, env=env, capture_output=True, text=True
    )
    assert out.returncode != 0
    assert re.search(r"^backends +none$", out.stdout, re.M)
    assert f"source checkout {clone / 'fastopt'}" in out.stdout  # info's extension_error
    assert "ExtensionMissingError" in out.stderr and "--no-python fastopt" in out.stderr
