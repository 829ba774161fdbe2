"""The fused pipeline with optimizer states sharded over processes (ZeroRedundancyOptimizer).

Each process's fastopt optimizer holds a shard of the params; the clip norm and the inf/nan
verdict must still be those of all grads, so they are all-reduced between the engine's two passes.
"""

from __future__ import annotations

import math
import os

import dist_run
import pytest
import torch
from torch.distributed.optim import ZeroRedundancyOptimizer

import fastopt

SHAPES = [(30, 20), (20,), (50, 3), (7,), (1000,)]
STEPS = 6


def _grads(step):
    g = torch.Generator().manual_seed(step)
    grads = [torch.randn(s, generator=g) * 3 for s in SHAPES]
    if step == 3:
        grads[4][17] = float("inf")  # lives in one shard only
    return grads


def _params():
    g = torch.Generator().manual_seed(123)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _train(optimizer, wrapper_cls, params, clip, amp):
    kw = dict(loss_scale=dict(init_scale=4.0), dtype="float16") if amp else {}
    wrapper = wrapper_cls(optimizer=optimizer, clip_grad=clip, **kw)
    wrapper.message_hub = fastopt.logging.MessageHub.get_instance(
        f"dist-{os.getpid()}-{id(wrapper)}"
    )
    norms = []
    for step in range(STEPS):
        scale = wrapper.loss_scaler.get_scale() if amp else 1.0
        for p, g in zip(params, _grads(step)):
            p.grad = g * scale
        if amp:  # the scaler needs its scale tensor, as after scaler.scale(loss)
            wrapper.loss_scaler.scale(torch.ones(()))
        wrapper.step()
        norms.append(float(wrapper.message_hub.get_scalar("train/grad_norm").current()))
        wrapper.zero_grad()
    return [p.detach().clone() for p in params], norms


def _worker(rank, world, norm_type, amp, out_dir):
    params = _params()
    zero = ZeroRedundancyOptimizer(params, optimizer_class=fastopt.FusedAdamW, lr=0.05)
    assert isinstance(zero.optim, fastopt.FusedAdamW)
    assert len(zero.optim.param_groups[0]["params"]) < len(params), "each rank holds a shard"
    wrapper_cls = fastopt.AmpOptimWrapper if amp else fastopt.OptimWrapper
    result = _train(zero, wrapper_cls, params, dict(max_norm=1.0, norm_type=norm_type), amp)
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.dist
@pytest.mark.parametrize(
    "norm_type,amp", [(2.0, False), (math.inf, False), (2.0, True)], ids=["l2", "inf", "amp"]
)
def test_zero_sharded_fused_clip_equals_single_process(tmp_path, norm_type, amp):
    dist_run.spawn(_worker, 2, norm_type, amp, str(tmp_path))
    params = _params()
    wrapper_cls = fastopt.AmpOptimWrapper if amp else fastopt.OptimWrapper
    expected, expected_norms = _train(
        fastopt.FusedAdamW(params, lr=0.05),
        wrapper_cls,
        params,
        dict(max_norm=1.0, norm_type=norm_type),
        amp,
    )
    for rank in range(2):
        got, norms = torch.load(tmp_path / f"rank{rank}.pt")
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, equal_nan=True)
        for a, b in zip(norms, expected_norms):
            assert (math.isinf(a) and math.isinf(b)) or a == pytest.approx(b, rel=1e-6)
    assert math.isinf(expected_norms[3])
