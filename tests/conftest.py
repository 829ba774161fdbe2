import sys
from pathlib import Path

import pytest
import torch

# the runner-layer toys (tests/data/runner/runner_toys.py) import as `runner_toys` everywhere
sys.path.insert(0, str(Path(__file__).parent / "data" / "runner"))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


def fastopt_subprocess_env(*extra_paths: str) -> dict:
    """Environment for a child Python that imports the same fastopt as this test run.

    In CI that is the installed package (the source tree has no compiled engine), during
    development the source tree; children must also run outside the repo root (cwd) so
    `python -m fastopt` does not pick up ./fastopt instead.
    """
    import os

    import fastopt

    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(fastopt.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *extra_paths])
    return env


def run_on_every_isa(script: str, tmp_path: Path, *inputs: str, suffix: str = ".npz") -> dict:
    """Runs ``python -c script *inputs out`` once per CPU code path this machine supports
    (FASTOPT_CPU_ISA, worst first), with the tests directory importable; returns
    {isa: out path}. Asserts there are at least two paths to compare (a CPU with AVX2)."""
    import subprocess

    import fastopt._ext

    isas = fastopt._ext.build_info()["cpu_isas_supported"]
    assert len(isas) >= 2, "this check needs a CPU with AVX2"
    outs = {}
    for isa in isas:
        env = dict(fastopt_subprocess_env(str(Path(__file__).parent)), FASTOPT_CPU_ISA=isa)
        outs[isa] = tmp_path / f"isa_{isa}{suffix}"
        subprocess.run(
            [sys.executable, "-c", script, *inputs, str(outs[isa])],
            check=True,
            env=env,
            cwd=tmp_path,
        )
    return outs


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of tiny-tensor runs: its pool only adds contention on
    a shared machine (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
