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


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module of tiny-tensor runs: its pool only adds contention on
    a shared machine (``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
