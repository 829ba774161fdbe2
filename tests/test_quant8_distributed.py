"""8-bit states sharded over processes (ZeroRedundancyOptimizer): each rank steps its params
with the same choice of 8-bit or float32 states (by the param's own size, which a ZeRO shard
keeps whole) and the same blocks, so 2 processes equal 1 bit for bit; the consolidated state
dict holds the codes."""

from __future__ import annotations

import os

import dist_run
import pytest
import torch
from torch.distributed.optim import ZeroRedundancyOptimizer

import fastopt

SHAPES = [(64, 80), (300,), (4100,), (9, 7), (70, 70)]
STEPS = 4


def _params():
    g = torch.Generator().manual_seed(123)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _train(opt, params):
    for step in range(STEPS):
        g = torch.Generator().manual_seed(step)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        opt.step()
    return [p.detach().clone() for p in params]


def _worker(rank, world, out_dir):
    params = _params()
    zero = ZeroRedundancyOptimizer(
        params, optimizer_class=fastopt.FusedAdamW, lr=0.05, state_dtype="8bit"
    )
    assert len(zero.optim.param_groups[0]["params"]) < len(params), "each rank holds a shard"
    result = _train(zero, params)
    kinds = {
        tuple(p.shape): zero.optim.state[p]["exp_avg"].dtype
        for p in zero.optim.param_groups[0]["params"]
    }
    zero.consolidate_state_dict(to=0)
    sd = zero.state_dict() if rank == 0 else None
    torch.save((result, kinds, sd), os.path.join(out_dir, f"rank{rank}.pt"))


@pytest.mark.dist
def test_zero_8bit_equals_single_process(tmp_path):
    dist_run.spawn(_worker, 2, str(tmp_path))
    params = _params()
    single = fastopt.FusedAdamW(params, lr=0.05, state_dtype="8bit")
    expected = _train(single, params)
    kinds = {}
    for rank in range(2):
        got, rank_kinds, sd = torch.load(tmp_path / f"rank{rank}.pt", weights_only=False)
        kinds.update(rank_kinds)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)
    assert kinds == {
        s: torch.uint8 if torch.Size(s).numel() >= 4096 else torch.float32 for s in SHAPES
    }
    _, _, sd = torch.load(tmp_path / "rank0.pt", weights_only=False)
    want = single.state_dict()["state"]
    for i, state in sd["state"].items():
        for key, value in state.items():
            assert torch.equal(value, want[i][key]), (i, key)
