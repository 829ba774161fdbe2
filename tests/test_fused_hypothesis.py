"""Property-based checks over random shapes, dtypes and hyperparameters."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from optim_reference import TORCH_FOR_LOOP

import fastopt

shapes = st.lists(
    st.lists(st.integers(0, 70), min_size=1, max_size=3).map(tuple), min_size=1, max_size=5
)
unit = st.floats(0.0, 0.99)


def _check(name, kwargs, shape_list, dtype, seed, steps=4):
    g = torch.Generator().manual_seed(seed)
    fused_params = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shape_list]
    ref_params = [torch.nn.Parameter(p.detach().float().clone()) for p in fused_params]
    fused = getattr(fastopt, name)(fused_params, **kwargs)
    ref = TORCH_FOR_LOOP[name](ref_params, **kwargs)
    for _ in range(steps):
        for pf, pr in zip(fused_params, ref_params):
            pf.grad = torch.randn(pf.shape, generator=g).to(dtype)
            pr.grad = pf.grad.float()
        fused.step()
        ref.step()
        with torch.no_grad():
            for pr in ref_params:
                pr.copy_(pr.to(dtype).float())
    # low precision: a rounding flip costs one unit in the last place at |p| < 8
    tol = {
        torch.float32: dict(rtol=1e-5, atol=1e-6),
        torch.bfloat16: dict(rtol=2e-2, atol=2**-5 + 1e-6),
        torch.float16: dict(rtol=3e-3, atol=2**-8 + 1e-6),
    }[dtype]
    for a, b in zip(fused_params, ref_params):
        torch.testing.assert_close(a.detach().float(), b.detach(), **tol)


dtypes = st.sampled_from([torch.float32, torch.bfloat16, torch.float16])


@settings(max_examples=40, deadline=None)
@given(
    shapes,
    dtypes,
    st.floats(1e-4, 0.5),
    unit,
    st.floats(0.0, 0.1),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_sgd(shape_list, dtype, lr, momentum, wd, nesterov, maximize, seed):
    kw = dict(
        lr=lr,
        momentum=momentum,
        weight_decay=wd,
        nesterov=nesterov and momentum > 0,
        maximize=maximize,
    )
    _check("FusedSGD", kw, shape_list, dtype, seed)


@settings(max_examples=40, deadline=None)
@given(
    shapes,
    dtypes,
    st.floats(1e-4, 0.1),
    unit,
    st.floats(0.5, 0.999),
    st.floats(1e-8, 1e-3),
    st.floats(0.0, 0.2),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.integers(0, 2**16),
)
def test_adam(shape_list, dtype, lr, b1, b2, eps, wd, amsgrad, maximize, decoupled, seed):
    name = "FusedAdamW" if decoupled else "FusedAdam"
    kw = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, amsgrad=amsgrad, maximize=maximize)
    _check(name, kw, shape_list, dtype, seed)


@settings(max_examples=30, deadline=None)
@given(
    shapes,
    st.floats(1e-3, 1.0),
    unit,
    st.floats(0.0, 0.1),
    st.floats(1e-4, 0.1),
    st.integers(0, 2**16),
)
def test_lars(shape_list, lr, momentum, wd, eta, seed):
    _check(
        "FusedLARS",
        dict(lr=lr, momentum=momentum, weight_decay=wd, eta=eta),
        shape_list,
        torch.float32,
        seed,
    )
