"""Step time of each fused optimizer against torch.optim's implementations, per set.

Each group (``step <set> <optim> <dtype> <device>``) holds fastopt, torch's for-loop, foreach
and fused step (for LARS: the reference loop) and the same-bytes bandwidth reference
(``a.add_(b)`` on CPU, ``dst.copy_(src)`` on CUDA).
"""

from __future__ import annotations

from typing import Any

import pytest
from bench_utils import ParamCache, device_params, fastopt_has, sync

from fastopt.benchmark.candidates import OPTIMS, build_optimizer
from fastopt.benchmark.param_sets import DTYPES, SETS
from fastopt.benchmark.step import params_step_bytes
from fastopt.benchmark.timing import stream_reference

REFERENCE = "reference"


def _cases() -> list[Any]:
    cases = []
    for set_name in SETS:
        for dtype in DTYPES:
            for optim, spec in OPTIMS.items():
                for impl in (*spec.impls(), REFERENCE):
                    cases += device_params(set_name, dtype, optim, impl)
    return cases


@pytest.mark.parametrize("set,dtype,optim,impl,device", _cases())
def test_step(
    benchmark: Any,
    param_cache: ParamCache,
    set: str,
    dtype: str,
    optim: str,
    impl: str,
    device: str,
) -> None:
    if impl == "fastopt" and not fastopt_has(device):
        pytest.skip(f"fastopt was built without a {device} engine")
    params = param_cache.get(set, dtype, device)
    nbytes = params_step_bytes(optim, params)
    if impl == REFERENCE:
        fn, ref_bytes, label = stream_reference(nbytes, device)
        benchmark.extra_info.update(reference=label, bytes=ref_bytes)
    else:
        fn = build_optimizer(optim, impl, params).step
        fn()  # create the states outside the timing
        benchmark.extra_info.update(bytes=nbytes)
    benchmark.group = f"step {set} {optim} {dtype} {device}"
    benchmark.extra_info.update(tensors=params.n_tensors, params=params.numel)

    def run() -> None:
        fn()
        sync(device)

    benchmark(run)
    if benchmark.stats is not None:  # None under --benchmark-disable
        median = benchmark.stats.stats.median
        benchmark.extra_info["gbps"] = benchmark.extra_info["bytes"] / median / 1e9
