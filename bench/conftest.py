"""pytest-benchmark suites: fastopt against torch.optim, one benchmark group per workload.

Run them with ``python -m pytest bench`` (they are not part of the default ``pytest`` run,
whose ``testpaths`` is ``tests``). Every test has a ``set`` parameter, so
``--benchmark-group-by=param:set`` puts fastopt and torch side by side per parameter set.
``--bench-scale 0.01`` shrinks every tensor for a quick pass. These numbers are not
interleaved; for ratios measured in one interleaved run use ``fastopt bench``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from bench_utils import ParamCache


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fastopt-bench")
    group.addoption(
        "--bench-scale",
        type=float,
        default=float(os.environ.get("FASTOPT_BENCH_SCALE", "1")),
        help="shrink every benchmark tensor to this fraction of its size (default 1, "
        "or $FASTOPT_BENCH_SCALE)",
    )


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pyproject's addopts disables pytest-benchmark for the test suite; these files exist to
    # benchmark, so enable it unless --benchmark-disable is on this command line.
    if "--benchmark-disable" not in config.invocation_params.args:
        config.option.benchmark_enable = True


@pytest.fixture(scope="session")
def bench_scale(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--bench-scale"))


@pytest.fixture(scope="session")
def param_cache(bench_scale: float) -> Iterator[ParamCache]:
    yield ParamCache(bench_scale)
