"""Training iterations (forward + backward + step) with fastopt and with torch's optimizers.

``set`` is the model here (``cnn``, ``transformer``), so ``--benchmark-group-by=param:set``
works across all suites. An iteration with fastopt must be as fast as with torch's fused
optimizer: fastopt's threads must not slow torch's own forward/backward.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench_utils import device_params, fastopt_has, sync

from fastopt.benchmark.train_loop import LOOP_IMPLS, MODELS, make_train_step

LOOP_BENCH_OPTIMS = ("sgd", "adamw")


def _cases() -> list[Any]:
    return [
        case
        for model in MODELS
        for optim in LOOP_BENCH_OPTIMS
        for impl in LOOP_IMPLS
        for case in device_params(model, optim, impl)
    ]


@pytest.mark.parametrize("set,optim,impl,device", _cases())
def test_train_loop(
    benchmark: Any, bench_scale: float, set: str, optim: str, impl: str, device: str
) -> None:
    if impl == "fastopt" and not fastopt_has(device):
        pytest.skip(f"fastopt was built without a {device} engine")
    step = make_train_step(set, optim, impl, device=device, scale=bench_scale)
    step()  # states and first-iteration allocations outside the timing

    def run() -> None:
        step()
        sync(device)

    benchmark.group = f"train-loop {set} {optim} {device}"
    benchmark.extra_info.update(batch=step.batch[0].shape[0])
    benchmark(run)
