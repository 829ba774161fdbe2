"""The whole update: clip_grad_norm_ + step, and AMP unscale + clip + step (issue 4).

fastopt: ``OptimWrapper`` / ``AmpOptimWrapper(clip_grad=dict(max_norm=1.0))`` around the fused
AdamW; torch: ``clip_grad_norm_`` (+ ``GradScaler``) around ``AdamW(fused=True)``.
"""

from __future__ import annotations

from typing import Any

import pytest
from bench_utils import ParamCache, device_params, fastopt_has, sync

from fastopt.benchmark.param_sets import SETS
from fastopt.benchmark.pipeline import PIPELINE_IMPLS, PIPELINES, build_pipeline
from fastopt.benchmark.step import params_step_bytes

PIPELINE_OPTIMS = ("adamw",)


def _cases() -> list[Any]:
    return [
        case
        for set_name in SETS
        for pipeline in PIPELINES
        for optim in PIPELINE_OPTIMS
        for impl in PIPELINE_IMPLS
        for case in device_params(set_name, pipeline, optim, impl)
    ]


@pytest.mark.parametrize("set,pipeline,optim,impl,device", _cases())
def test_pipeline(
    benchmark: Any,
    param_cache: ParamCache,
    set: str,
    pipeline: str,
    optim: str,
    impl: str,
    device: str,
) -> None:
    if impl == "fastopt" and not fastopt_has(device):
        pytest.skip(f"fastopt was built without a {device} engine")
    params = param_cache.get(set, "fp32", device)
    fn = build_pipeline(pipeline, impl, optim, params)
    fn()  # states outside the timing

    def run() -> None:
        fn()
        sync(device)

    benchmark.group = f"pipeline {set} {pipeline} {optim} {device}"
    nbytes = params_step_bytes(optim, params, extra_grad_reads=1)
    benchmark.extra_info.update(bytes=nbytes, tensors=params.n_tensors)
    benchmark(run)
    if benchmark.stats is not None:  # None under --benchmark-disable
        benchmark.extra_info["gbps"] = nbytes / benchmark.stats.stats.median / 1e9
