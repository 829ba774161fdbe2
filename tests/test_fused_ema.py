"""Averaged models updated in one engine pass (op ``ema``) against MMEngine's own classes: the
same tensors, bit for bit, over many updates, with interval, update_buffers, 16-bit models,
resume, and the per-tensor path for what the engine does not take."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from fastopt.model.averaged_model import (
    BaseAveragedModel,
    ExponentialMovingAverage,
    MomentumAnnealingEMA,
    StochasticWeightAverage,
)
from fastopt.ops import averaging

mm = pytest.importorskip("mmengine.model")

CLASSES = {
    "ema": (ExponentialMovingAverage, mm.ExponentialMovingAverage, dict(momentum=0.3)),
    "ema_small": (ExponentialMovingAverage, mm.ExponentialMovingAverage, dict(momentum=2e-4)),
    "annealing": (MomentumAnnealingEMA, mm.MomentumAnnealingEMA, dict(momentum=0.01, gamma=5)),
    "swa": (StochasticWeightAverage, mm.StochasticWeightAverage, {}),
}
OPTIONS = {
    "plain": {},
    "interval": dict(interval=3),
    "buffers": dict(update_buffers=True),
    "interval_buffers": dict(interval=2, update_buffers=True),
}


def _model(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    # conv + BN (float and long buffers), a transposed (dense, non-contiguous) weight and a
    # tensor of 70_000 elements (more than one engine chunk)
    m = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 6 * 6, 5)
    ).to(dtype)
    m.register_parameter("big", nn.Parameter(torch.randn(70_000).to(dtype)))
    m.register_parameter("wt", nn.Parameter(torch.randn(6, 4).to(dtype).t()))
    return m


def _train_step(m: nn.Module, i: int) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * (1.0 + i % 3))
        bn = m[1]
        bn.running_mean.mul_(0.9).add_(torch.randn(8).to(bn.running_mean.dtype))
        bn.num_batches_tracked += 1


def _assert_same(ours: nn.Module, ref: nn.Module, exact: bool = True) -> None:
    so, sr = ours.state_dict(), ref.state_dict()
    assert so.keys() == sr.keys()
    for k in so:
        if exact or not so[k].dtype.is_floating_point:
            assert torch.equal(so[k], sr[k]), k
        else:  # see test_swa_16bit
            torch.testing.assert_close(so[k], sr[k], rtol=0.02, atol=0.02, msg=k)


def _tables(avg: BaseAveragedModel) -> averaging.AveragingTable:
    return avg.__dict__["_tables"]


@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("kind", CLASSES)
def test_equal_to_mmengine_many_updates(kind: str, option: str) -> None:
    ours_cls, ref_cls, kwargs = CLASSES[kind]
    kwargs = {**kwargs, **OPTIONS[option]}
    m = _model()
    ours, ref = ours_cls(m, **kwargs), ref_cls(m, **kwargs)
    for i in range(25):
        _train_step(m, i)
        ours.update_parameters(m)
        ref.update_parameters(m)
        _assert_same(ours, ref)
    t = _tables(ours)
    assert t.full.backend is not None  # the engine ran
    # every floating tensor went through it (num_batches_tracked is copied by torch)
    assert not t.loop_average
    assert all(not a.dtype.is_floating_point for a, _ in t.loop_buffers)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["ema", "annealing"])
@pytest.mark.parametrize("option", ["plain", "interval_buffers"])
def test_16bit_ema_equal_to_mmengine(kind: str, dtype: torch.dtype, option: str) -> None:
    ours_cls, ref_cls, kwargs = CLASSES[kind]
    kwargs = {**kwargs, **OPTIONS[option]}
    m = _model(dtype)
    ours, ref = ours_cls(m, **kwargs), ref_cls(m, **kwargs)
    for i in range(15):
        _train_step(m, i)
        ours.update_parameters(m)
        ref.update_parameters(m)
        _assert_same(ours, ref)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_swa_16bit(dtype: torch.dtype) -> None:
    """torch's 16-bit add_(x, alpha) rounds differently in its vector body (alpha in the dtype,
    one fused rounding in float) and its scalar tails (every operation in the dtype), which
    depend on the thread split; the engine computes the vector body's formula everywhere."""
    ours_cls, ref_cls, _ = CLASSES["swa"]
    m = _model(dtype)
    ours, ref = ours_cls(m), ref_cls(m)
    for i in range(10):
        _train_step(m, i)
        ours.update_parameters(m)
        ref.update_parameters(m)
        _assert_same(ours, ref, exact=False)
    # the vector body's formula, bit for bit, on one update of one tensor
    avg, src = torch.randn(1 << 12).to(dtype), torch.randn(1 << 12).to(dtype)
    alpha = 1 / 3
    want = (
        avg.double() + torch.tensor(alpha).to(dtype).double() * (src - avg).double()
    ).float()  # exact in double, then one rounding to float
    table = averaging.AveragingTable([(avg, src, averaging.AVERAGE)])
    table.update("mean", alpha)
    assert torch.equal(avg, want.to(dtype))


def test_resume_mid_run() -> None:
    """A state dict saved mid-run and loaded into a new copy continues as MMEngine's does."""
    ours_cls, ref_cls, kwargs = CLASSES["annealing"]
    kwargs = {**kwargs, "interval": 2}
    m = _model()
    ours, ref = ours_cls(m, **kwargs), ref_cls(m, **kwargs)
    for i in range(7):
        _train_step(m, i)
        ours.update_parameters(m)
        ref.update_parameters(m)
    saved = copy.deepcopy(ours.state_dict())
    # the same keys and values as MMEngine's state dict: checkpoints move between the two
    assert saved.keys() == ref.state_dict().keys()
    resumed = ours_cls(_model(seed=1), **kwargs)
    resumed.load_state_dict(saved)
    mm_resumed = ref_cls(_model(seed=1), **kwargs)
    mm_resumed.load_state_dict(saved)
    for i in range(7, 20):
        _train_step(m, i)
        resumed.update_parameters(m)
        mm_resumed.update_parameters(m)
        ref.update_parameters(m)
        _assert_same(resumed, ref)
        _assert_same(mm_resumed, ref)


def test_per_tensor_path_for_what_the_engine_does_not_take() -> None:
    """Another dtype on one side, a tensor subclass and tied weights go one by one (MMEngine's
    code), the rest through the engine; results still equal MMEngine's."""

    class Sub(torch.Tensor):  # a wrapper subclass: its data pointer is not its values
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return super().__torch_function__(func, types, args, kwargs or {})

    m = _model()
    m.tied = m[3].weight  # tied weights: one tensor under two keys of the state dict
    m.register_buffer("odd", torch.zeros(3, dtype=torch.float64))
    ours = ExponentialMovingAverage(m, momentum=0.2, update_buffers=True)
    ref = mm.ExponentialMovingAverage(m, momentum=0.2, update_buffers=True)
    for i in range(6):
        _train_step(m, i)
        m.odd.add_(1.0)
        ours.update_parameters(m)
        ref.update_parameters(m)
        _assert_same(ours, ref)
    t = _tables(ours)
    loop = {id(a) for a, _ in t.loop_average}
    assert id(ours.module[3].weight) in loop  # tied: averaged twice, as MMEngine does
    assert id(ours.module.odd) in loop  # float64: not an engine dtype
    assert len(t.full) > 0

    assert not averaging.engine_takes(torch.zeros(3).as_subclass(Sub), torch.zeros(3))
    assert not averaging.engine_takes(torch.zeros(3), torch.zeros(3, dtype=torch.bfloat16))
    assert averaging.engine_takes(torch.zeros(3, dtype=torch.bfloat16), torch.zeros(3))
    assert not averaging.engine_takes(torch.zeros(3), torch.zeros(4))


def test_custom_avg_func_goes_one_by_one() -> None:
    class Halfway(ExponentialMovingAverage):
        def avg_func(self, averaged_param, source_param, steps):
            averaged_param.mul_(0.5).add_(source_param, alpha=0.5)

    m = _model()
    ours = Halfway(m, momentum=0.1)
    want = [p.detach().clone() for p in m.parameters()]
    for i in range(3):
        _train_step(m, i)
        ours.update_parameters(m)
        for w, p in zip(want, m.parameters()):
            if i == 0:
                w.copy_(p)
            else:
                w.mul_(0.5).add_(p.detach(), alpha=0.5)
    for w, p in zip(want, ours.module.parameters()):
        assert torch.equal(w, p)


def test_tables_follow_replaced_tensors() -> None:
    """A source param replaced, an averaged buffer moved to another dtype, storage swapped
    under a param: the next update rebuilds what changed and stays equal to MMEngine."""
    m = _model()
    ours = ExponentialMovingAverage(m, momentum=0.25)
    ref = mm.ExponentialMovingAverage(m, momentum=0.25)
    for i in range(12):
        _train_step(m, i)
        if i == 3:
            m[3].weight = nn.Parameter(m[3].weight.detach() * 2)
        if i == 5:
            m[3].bias.data = m[3].bias.data.clone()  # new storage, same Parameter
        if i == 7:
            for avg_model in (ours.module, ref.module):
                avg_model[0].weight.data = avg_model[0].weight.data.clone()
        ours.update_parameters(m)
        ref.update_parameters(m)
        _assert_same(ours, ref)


def test_deepcopy_and_pickle_drop_the_tables() -> None:
    m = _model()
    ours = ExponentialMovingAverage(m, momentum=0.3)
    ours.update_parameters(m)
    assert "_tables" in ours.__dict__
    clone = copy.deepcopy(ours)
    assert "_tables" not in clone.__dict__ and "_tables" in ours.__dict__
    _train_step(m, 1)
    clone.update_parameters(m)
    ours.update_parameters(m)
    _assert_same(clone, ours)
