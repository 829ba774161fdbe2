"""The engine's phases for tensors sharded over processes, in one process, on both engines.

FSDP2 splits each tensor over processes; LARS and LAMB need each whole tensor's norms. The
engine reports each shard's sums of squares (``tensor_out``), the processes all-reduce them and
the update reads the totals (``tensor_in``). Here two optimizers over the two halves of every
tensor stand for two processes, and a sum of their buffers for the all-reduce: their steps must
equal one optimizer over the whole tensors, on the CPU engine and on the CUDA engine under host
emulation. (``tests/test_fsdp2.py`` runs the same through FSDP2 and gloo.)
"""

from __future__ import annotations

import pytest
import torch
from optim_reference import engine

import fastopt
from fastopt import _C as CPU
from fastopt.ops import catalog

SIMT = pytest.importorskip("fastopt._C_simt", reason="fastopt._C_simt is not built")

# uneven halves, an empty half (1 row), more than one CPU chunk (65536 elements)
SHAPES = [(7, 3), (1,), (70001,), (5, 2, 3)]
CASES = {
    "lars": ("FusedLARS", dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
    "lars-nesterov": ("FusedLARS", dict(lr=0.1, momentum=0.9, nesterov=True)),
    "lamb": ("FusedLAMB", dict(lr=0.01, weight_decay=0.01)),
    "lamb-no-rescale": ("FusedLAMB", dict(lr=0.01, weight_decay=0.1, max_grad_norm=None)),
}


def _shards(t: torch.Tensor) -> list[torch.Tensor]:
    return [piece.clone() for piece in torch.tensor_split(t, 2, dim=0)]


def _sharded_step(opts, clip):
    """What FusedOptimizer._run_phases does over processes, with sums in place of all-reduces."""
    plans = [o._begin_step() for o in opts]
    pipe = dict(
        max_norm=float(clip or 0.0),
        rescale_max_norm=float(opts[0]._rescale_max_norm()),
        norm_type=catalog.norm_type("l2"),
        norm_p=2.0,
    )
    reduced = {}
    if pipe["max_norm"] or pipe["rescale_max_norm"]:
        totals = [torch.zeros((), dtype=torch.float64) for _ in opts]
        for o, plan, t in zip(opts, plans, totals):
            o._run(plan, finish=False, **pipe, total_out=t.data_ptr())
        total = sum(totals)
        reduced["total_in"] = total.data_ptr()
    sums = [torch.zeros(p.engine.tensor_sums_size, dtype=torch.float64) for p in plans]
    for o, plan, s in zip(opts, plans, sums):
        before = [t.clone() for g in o.param_groups for t in g["params"]]
        o._run(plan, finish=False, **pipe, **reduced, tensor_out=s.data_ptr())
        # the reduction phase changes nothing
        assert all(
            torch.equal(a, b)
            for a, b in zip(before, (t for g in o.param_groups for t in g["params"]))
        )
    assert all(s.abs().sum() > 0 for s in sums)
    summed = sums[0] + sums[1]
    reduced["tensor_in"] = summed.data_ptr()
    for o, plan in zip(opts, plans):
        o._run(plan, **pipe, **reduced)


@pytest.mark.parametrize("module", [CPU, SIMT], ids=["cpu", "simt"])
@pytest.mark.parametrize("clip", [None, 0.3])
@pytest.mark.parametrize("case", list(CASES))
def test_sums_of_two_shards_step_like_the_whole_tensors(module, clip, case):
    name, kw = CASES[case]
    cls = getattr(fastopt, name)
    gen = torch.Generator().manual_seed(0)
    whole = [torch.randn(s, generator=gen) for s in SHAPES]
    halves = [_shards(t) for t in whole]
    with engine(module):
        full = cls([t.clone() for t in whole], **kw)
        shard_opts = [cls([h[i] for h in halves], **kw) for i in range(2)]
        # two groups: the per-tensor sums are laid out by the param's index in the optimizer
        for o in (full, *shard_opts):
            params = o.param_groups[0]["params"]
            o.param_groups[0]["params"] = params[:2]
            o.add_param_group({"params": params[2:], "lr": kw["lr"] / 2})
        for _ in range(3):
            grads = [torch.randn(s, generator=gen) for s in SHAPES]
            for p, g in zip((p for grp in full.param_groups for p in grp["params"]), grads):
                p.grad = g.clone()
            for i, o in enumerate(shard_opts):
                for p, g in zip((p for grp in o.param_groups for p in grp["params"]), grads):
                    p.grad = _shards(g)[i]
            if clip is None:
                full.step()
            else:
                full.fused_step(max_norm=clip)
            _sharded_step(shard_opts, clip)
            params = [p for grp in full.param_groups for p in grp["params"]]
            pieces = [[p for grp in o.param_groups for p in grp["params"]] for o in shard_opts]
            for p, a, b in zip(params, *pieces):
                # the sums of squares add in another order: equal to float64 rounding, which
                # float32 results rarely see
                torch.testing.assert_close(torch.cat([a, b]), p, rtol=1e-6, atol=1e-7)
