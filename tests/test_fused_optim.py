"""Fused optimizers against the implementations they follow (the catalog's references)."""

from __future__ import annotations

import pytest
import torch
from optim_reference import CASES, ONE_CASE_EACH, TORCH_FOR_LOOP, grouped

import fastopt

CHUNK = 1 << 16  # the CPU engine's chunk size

# shapes: empty, one element, odd, larger than one chunk
SHAPES = [(0,), (1,), (7, 3), (CHUNK + 123,), (33, 5, 2)]


def make_params(seed: int, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in SHAPES]


def run_pair(
    name, kwargs, steps=20, seed=0, dtype=torch.float32, state_dtype=torch.float32, transform=None
):
    """Step a fused optimizer and its reference on identical params and random grads."""
    base = make_params(seed, dtype)
    fused_params = [torch.nn.Parameter(t.clone()) for t in base]
    ref_params = [torch.nn.Parameter(t.clone().float()) for t in base]
    if transform is not None:
        fused_params = transform(fused_params)
        ref_params = transform(ref_params)
    fused = getattr(fastopt, name)(grouped(name, fused_params), state_dtype=state_dtype, **kwargs)
    ref = TORCH_FOR_LOOP[name](grouped(name, ref_params), **kwargs)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        for pf, pr in zip(fused_params, ref_params):
            grad = torch.randn(pf.shape, generator=g)
            pf.grad = grad.to(dtype)
            pr.grad = pf.grad.float()
        fused.step()
        ref.step()
        if dtype != torch.float32:  # the reference keeps fp32 states, rounds params each step
            with torch.no_grad():
                for pr in ref_params:
                    pr.copy_(pr.to(dtype).float())
    return fused, ref, fused_params, ref_params


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_reference_fp32(case):
    name, kwargs = CASES[case]
    fused, ref, fp, rp = run_pair(name, kwargs)
    for a, b in zip(fp, rp):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)
    for pa, pb in zip(fp, rp):
        sa, sb = fused.state.get(pa, {}), ref.state.get(pb, {})
        assert set(sa) == set(sb), f"state keys differ: {sorted(sa)} vs {sorted(sb)}"
        for key in sa:
            torch.testing.assert_close(sa[key].float(), sb[key].float(), rtol=2e-5, atol=2e-6)


def test_ill_conditioned_centered_rmsprop_as_accurate_as_torch():
    """Centered RMSprop with a short window (alpha=0.3) divides by sqrt(sq - ga^2), which is
    near zero for some elements: there the last bit of torch's FMA lerp and ours differ and the
    momentum buffer amplifies it. Against float64 the fused result is as accurate as torch's."""
    name, kwargs = "FusedRMSprop", dict(lr=1e-2, momentum=0.5, centered=True, alpha=0.3)
    fused, ref, fp, rp = run_pair(name, kwargs)
    base = make_params(0)
    exact = [torch.nn.Parameter(t.clone().double()) for t in base]
    truth = torch.optim.RMSprop(grouped(name, exact), foreach=False, **kwargs)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):  # run_pair's grads, in float64
        for p in exact:
            p.grad = torch.randn(p.shape, generator=g).double()
        truth.step()
    for pf, pr, pe in zip(fp, rp, exact):
        for key in ("square_avg", "grad_avg", "momentum_buffer"):
            ours = (fused.state[pf][key].double() - truth.state[pe][key]).abs()
            theirs = (ref.state[pr][key].double() - truth.state[pe][key]).abs()
            if ours.numel():
                assert ours.max() <= 2 * theirs.max() + 1e-6, key


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", ONE_CASE_EACH)
def test_low_precision_params_fp32_states(case, dtype):
    name, kwargs = CASES[case]
    fused, _, fp, rp = run_pair(name, kwargs, dtype=dtype)
    for a, b in zip(fp, rp):
        assert a.dtype == dtype
        # one rounding of the param per step either way: at most a few units in the last place
        torch.testing.assert_close(a.detach().float(), b.detach(), rtol=3e-2, atol=1e-2)
    for p in fp:
        for key, value in fused.state.get(p, {}).items():
            if key != "step":
                assert value.dtype == torch.float32


@pytest.mark.parametrize("case", ["sgd_momentum", "adamw"])
def test_low_precision_states_in_param_dtype(case):
    """state_dtype='param' keeps bf16 states, like torch's own for-loop on bf16 params."""
    name, kwargs = CASES[case]
    dtype = torch.bfloat16
    base = make_params(3, dtype)
    fp = [torch.nn.Parameter(t.clone()) for t in base]
    tp = [torch.nn.Parameter(t.clone()) for t in base]
    fused = getattr(fastopt, name)(fp, state_dtype="param", **kwargs)
    ref = TORCH_FOR_LOOP[name](tp, **kwargs)
    g = torch.Generator().manual_seed(5)
    for _ in range(10):
        for a, b in zip(fp, tp):
            a.grad = torch.randn(a.shape, generator=g).to(dtype)
            b.grad = a.grad.clone()
        fused.step()
        ref.step()
    for a, b in zip(fp, tp):
        torch.testing.assert_close(a.detach().float(), b.detach().float(), rtol=5e-2, atol=2e-2)
    for p in fp:
        for key, value in fused.state[p].items():
            if key != "step":
                assert value.dtype == torch.bfloat16


def test_fp32_grads_for_bf16_params():
    """torch lets a param declare float32 grads (grad_dtype); the engine reads them as such."""
    p = torch.nn.Parameter(torch.randn(1000).bfloat16())
    q = torch.nn.Parameter(p.detach().float().clone())
    p.grad_dtype = torch.float32
    fused = fastopt.FusedAdamW([p], lr=1e-2)
    ref = torch.optim.AdamW([q], lr=1e-2, foreach=False)
    for i in range(5):
        grad = torch.randn(1000, generator=torch.Generator().manual_seed(i))
        p.grad = grad.clone()
        q.grad = grad.clone()
        fused.step()
        ref.step()
        with torch.no_grad():
            q.copy_(q.bfloat16().float())
    assert p.grad.dtype == torch.float32
    torch.testing.assert_close(p.detach().float(), q.detach(), rtol=2e-2, atol=1e-2)


def _transposed(params):
    return [
        torch.nn.Parameter(p.detach().t().contiguous().t()) if p.dim() == 2 else p for p in params
    ]


def _strided(params):
    out = []
    for p in params:
        if p.dim() == 2:  # a param that is a strided slice of a larger buffer: not dense
            big = torch.zeros(p.shape[0], p.shape[1] * 2)
            big[:, ::2] = p.detach()
            out.append(torch.nn.Parameter(big[:, ::2]))
        else:
            out.append(p)
    return out


@pytest.mark.parametrize("transform", [_transposed, _strided], ids=["dense_transposed", "strided"])
@pytest.mark.parametrize("case", ONE_CASE_EACH)
def test_non_contiguous_params(case, transform):
    name, kwargs = CASES[case]
    _, _, fp, rp = run_pair(name, kwargs, steps=5, transform=transform)
    assert any(not p.is_contiguous() for p in fp)
    for a, b in zip(fp, rp):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["FusedSGD", "FusedAdamW"])
def test_non_contiguous_grads(name):
    kwargs = dict(lr=0.01, momentum=0.9) if name == "FusedSGD" else dict(lr=0.01)
    p = torch.nn.Parameter(torch.randn(6, 5))
    q = torch.nn.Parameter(p.detach().clone())
    fused = getattr(fastopt, name)([p], **kwargs)
    ref = TORCH_FOR_LOOP[name]([q], **kwargs)
    for i in range(4):
        grad = torch.randn(5, 6, generator=torch.Generator().manual_seed(i)).t()  # a view
        assert not grad.is_contiguous()
        p.grad = grad
        q.grad = grad.clone()
        fused.step()
        ref.step()
    torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7)
    assert torch.equal(p.grad, grad), "the engine must not modify grads"


def test_params_without_grad_are_skipped():
    a, b = torch.nn.Parameter(torch.randn(10)), torch.nn.Parameter(torch.randn(10))
    before = b.detach().clone()
    opt = fastopt.FusedAdamW([a, b], lr=0.1)
    a.grad = torch.randn(10)
    opt.step()
    assert torch.equal(b.detach(), before)
    assert b not in opt.state and "exp_avg" in opt.state[a]
    # b joins later: it gets its own state and step count
    b.grad = torch.randn(10)
    opt.step()
    assert opt.state[a]["step"].item() == 2 and opt.state[b]["step"].item() == 1
    # a has no grad this time: untouched, step count unchanged
    a.grad = None
    a_before = a.detach().clone()
    opt.step()
    assert torch.equal(a.detach(), a_before) and opt.state[a]["step"].item() == 2


def test_hyperparameter_changes_take_effect_next_step():
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(100))
    q = torch.nn.Parameter(p.detach().clone())
    fused = fastopt.FusedSGD([p], lr=0.1)
    ref = torch.optim.SGD([q], lr=0.1, foreach=False)
    schedule = [
        dict(lr=0.05),
        dict(momentum=0.9),  # momentum switched on: a momentum buffer appears
        dict(weight_decay=0.01, nesterov=True),
        dict(dampening=0.0, maximize=True),
        dict(momentum=0.0, nesterov=False),
    ]
    for change in schedule:
        for opt in (fused, ref):
            opt.param_groups[0].update(change)
        for _ in range(3):
            grad = torch.randn(100)
            p.grad, q.grad = grad.clone(), grad.clone()
            fused.step()
            ref.step()
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)


def test_adam_hyperparameter_changes_and_amsgrad_toggle():
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(100))
    q = torch.nn.Parameter(p.detach().clone())
    fused = fastopt.FusedAdam([p], lr=0.01)
    ref = torch.optim.Adam([q], lr=0.01, foreach=False)
    for change in [
        dict(lr=0.02),
        dict(betas=(0.5, 0.9)),
        dict(weight_decay=0.1),
        dict(eps=1e-3),
        dict(decoupled_weight_decay=True),
        dict(amsgrad=True),
    ]:
        for opt in (fused, ref):
            opt.param_groups[0].update(change)
        if "amsgrad" in change:  # torch cannot switch amsgrad on mid-run; fused starts a zero max
            ref.state[q]["max_exp_avg_sq"] = torch.zeros_like(q)
        for _ in range(3):
            grad = torch.randn(100)
            p.grad, q.grad = grad.clone(), grad.clone()
            fused.step()
            ref.step()
        torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-5, atol=1e-6)
    assert "max_exp_avg_sq" in fused.state[p]


def test_tensor_lr_is_accepted():
    p = torch.nn.Parameter(torch.ones(4))
    opt = fastopt.FusedSGD([p], lr=0.5)
    opt.param_groups[0]["lr"] = torch.tensor(0.25)
    p.grad = torch.ones(4)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((4,), 0.75))


def test_add_param_group():
    a = torch.nn.Parameter(torch.randn(8))
    b = torch.nn.Parameter(torch.randn(8))
    qa, qb = (torch.nn.Parameter(t.detach().clone()) for t in (a, b))
    fused = fastopt.FusedAdamW([a], lr=0.01)
    ref = torch.optim.AdamW([qa], lr=0.01, foreach=False)
    for step in range(6):
        if step == 2:
            fused.add_param_group({"params": [b], "lr": 0.1})
            ref.add_param_group({"params": [qb], "lr": 0.1})
        for x, y in ((a, qa), (b, qb)):
            grad = torch.randn(8)
            x.grad, y.grad = grad.clone(), grad.clone()
        fused.step()
        ref.step()
    torch.testing.assert_close(a.detach(), qa.detach())
    torch.testing.assert_close(b.detach(), qb.detach())


def test_param_storage_replaced_between_steps():
    """p.data = ... (as Module.to() does) must not leave the engine writing the old memory."""
    p = torch.nn.Parameter(torch.zeros(5))
    opt = fastopt.FusedSGD([p], lr=1.0)
    p.grad = torch.ones(5)
    opt.step()
    p.data = torch.full((5,), 10.0)
    p.grad = torch.ones(5)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.full((5,), 9.0))


def test_lars_golden_values():
    """The reference doc's golden LARS trace (g7)."""
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = fastopt.FusedLARS([p], lr=0.1, weight_decay=0.01, eta=1e-3, momentum=0.9)
    expected = [
        [2.9997000694, 3.9995999336],
        [2.9991300106, 3.9988398552],
        [2.9983172417, 3.9977560043],
    ]
    for want in expected:
        p.grad = torch.tensor([0.6, 0.8])
        opt.step()
        torch.testing.assert_close(p.detach(), torch.tensor(want), rtol=1e-6, atol=1e-6)
    q = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = fastopt.FusedLARS(
        [{"params": [q], "lars_exclude": True}], lr=0.1, weight_decay=0.01, eta=1e-3, momentum=0.9
    )
    for want in ([2.937, 3.916], [2.8173630238, 3.7564837933]):
        q.grad = torch.tensor([0.6, 0.8])
        opt.step()
        torch.testing.assert_close(q.detach(), torch.tensor(want), rtol=1e-6, atol=1e-6)


def test_lars_zero_weight_uses_unit_local_lr():
    p = torch.nn.Parameter(torch.zeros(3))
    opt = fastopt.FusedLARS([p], lr=0.1)
    p.grad = torch.tensor([1.0, 2.0, 3.0])
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([-0.1, -0.2, -0.3]))


def test_closure_is_called_with_grad_enabled():
    p = torch.nn.Parameter(torch.tensor([1.0]))
    opt = fastopt.FusedSGD([p], lr=0.5)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 1.0
    torch.testing.assert_close(p.detach(), torch.tensor([0.0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ONE_CASE_EACH)
def test_params_at_misaligned_offsets(case, dtype):
    """Params that are views at odd element offsets into one flat buffer (as in flat-buffer
    schemes): no 16- or 64-byte alignment anywhere."""
    name, kwargs = CASES[case]

    def flat_views(params):
        sizes = [p.numel() for p in params]
        buf = torch.zeros(sum(sizes) + len(sizes) * 3 + 1, dtype=params[0].dtype)
        out, at = [], 1
        for p, n in zip(params, sizes):
            view = buf[at : at + n].view(p.shape)
            view.copy_(p.detach())
            out.append(torch.nn.Parameter(view))
            at += n + 3  # odd gaps: every param starts misaligned
        return out

    fused, _, fp, rp = run_pair(name, kwargs, steps=5, dtype=dtype, transform=flat_views)
    assert any(p.data_ptr() % 16 for p in fp)
    tol = dict(rtol=2e-5, atol=2e-6) if dtype == torch.float32 else dict(rtol=2e-2, atol=2**-5)
    for a, b in zip(fp, rp):
        torch.testing.assert_close(a.detach().float(), b.detach(), **tol)


def _step_both(fused, ref, fp, rp, steps=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for a, b in zip(fp, rp):
            a.grad = torch.randn(a.shape, generator=g)
            b.grad = a.grad.clone()
        fused.step()
        ref.step()


# The written-from-the-rule references of LAMB and Adan (timm's rules) against a maintained
# package, pytorch-optimizer, where the two packages' rules coincide.
MAINTAINED = {
    # pytorch-optimizer's Lamb: no bias correction with adam_debias=True; it clamps ||w|| at 10
    # (small params here) and adds eps to the trust ratio's denominator (1e-6 of ||u||)
    "lamb": (
        "FusedLAMB",
        dict(
            lr=1e-2, bias_correction=False, weight_decay=0.0, always_adapt=True, max_grad_norm=None
        ),
        "Lamb",
        dict(lr=1e-2, weight_decay=0.0, adam_debias=True),
        0.01,
    ),
    "adan": (
        "FusedAdan",
        dict(lr=1e-2, weight_decay=0.05),
        "Adan",
        dict(lr=1e-2, weight_decay=0.05),
        1.0,
    ),
    "adan_no_prox": (
        "FusedAdan",
        dict(lr=1e-2, weight_decay=0.05, no_prox=True, betas=(0.9, 0.8, 0.95)),
        "Adan",
        dict(lr=1e-2, weight_decay=0.05, weight_decouple=True, betas=(0.9, 0.8, 0.95)),
        1.0,
    ),
}


@pytest.mark.parametrize("case", sorted(MAINTAINED))
def test_matches_pytorch_optimizer(case):
    po = pytest.importorskip("pytorch_optimizer")
    name, kwargs, po_name, po_kwargs, scale = MAINTAINED[case]
    base = [t * scale for t in make_params(0)]
    fp = [torch.nn.Parameter(t.clone()) for t in base]
    rp = [torch.nn.Parameter(t.clone()) for t in base]
    fused = getattr(fastopt, name)(fp, **kwargs)
    ref = getattr(po, po_name)(rp, foreach=False, **po_kwargs)
    _step_both(fused, ref, fp, rp)
    for a, b in zip(fp, rp):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=2e-5, atol=2e-6)


def test_l2_term_rounds_once_as_torch():
    """torch's grad.add(param, alpha=wd) is one fused multiply-add; the engines' L2 term is
    too, so an SGD step with lr=1 equals torch's bit for bit, cancelling elements included."""
    g = torch.Generator().manual_seed(3)
    p = torch.nn.Parameter(torch.randn(CHUNK + 77, generator=g))
    q = torch.nn.Parameter(p.detach().clone())
    grad = torch.randn(p.shape, generator=g)
    grad[:1000] = -0.1 * p.detach()[:1000] * (1 + 1e-6)  # g + wd * p cancels here
    p.grad, q.grad = grad.clone(), grad.clone()
    fastopt.FusedSGD([p], lr=1.0, weight_decay=0.1).step()
    torch.optim.SGD([q], lr=1.0, weight_decay=0.1, foreach=False).step()
    assert torch.equal(p.detach(), q.detach())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwargs", [{}, dict(amsgrad=True), dict(betas=(0.5, 0.9))])
@pytest.mark.parametrize("name", ["FusedAdam", "FusedAdamW"])
def test_adam_plain_grad_variant_same_bits(name, kwargs, dtype):
    """Adam's common case (no maximize, no L2 term) has its own compiled variant without the
    grad's sign multiply: maximize=True on -g, which takes the general variant, must give the
    same bits (params and states), zeros, infs and NaNs in the grads included (a NaN's sign
    aside: negating the grad flips it, and x86's multiply by -1 keeps a NaN's sign)."""

    def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
        a, b = a.detach().float().view(-1), b.detach().float().view(-1)
        nan = a.isnan()
        return torch.equal(nan, b.isnan()) and torch.equal(
            a[~nan].view(torch.int32), b[~nan].view(torch.int32)
        )

    g = torch.Generator().manual_seed(5)
    x = torch.randn(CHUNK + 77, generator=g).to(dtype)
    grads = [torch.randn(x.shape, generator=g).to(dtype) for _ in range(4)]
    for grad in grads:
        grad[::97] = 0
        grad[5], grad[11] = float("inf"), float("nan")
    p, q = torch.nn.Parameter(x.clone()), torch.nn.Parameter(x.clone())
    states = dict(state_dtype="param") if dtype != torch.float32 else {}
    plain = getattr(fastopt, name)([p], lr=1e-2, **kwargs, **states)
    general = getattr(fastopt, name)([q], lr=1e-2, maximize=True, **kwargs, **states)
    for grad in grads:
        p.grad, q.grad = grad.clone(), -grad
        plain.step()
        general.step()
        assert same_bits(p, q)
    for key, value in plain.state[p].items():
        assert same_bits(value, general.state[q][key]), key
