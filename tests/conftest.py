import pytest
import torch


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
