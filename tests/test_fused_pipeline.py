"""The fused gradient pipeline (unscale, clip, inf/nan skip, scale update) against torch's."""

from __future__ import annotations

import math

import pytest
import torch

import fastopt
from fastopt.logging import MessageHub

INF_STEPS = {
    7: float("inf"),
    8: float("-inf"),
    20: float("nan"),
    33: float("inf"),
    41: float("nan"),
}
SHAPES = [(40, 30), (30,), (1,), (70_001,)]


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g)) for s in SHAPES]


def _inputs(step):
    """The loss is sum(w * x): the grads are exactly x; some steps carry an inf or nan."""
    g = torch.Generator().manual_seed(1000 + step)
    xs = [torch.randn(s, generator=g) * 3 for s in SHAPES]
    if step in INF_STEPS:
        xs[step % len(xs)].view(-1)[0] = INF_STEPS[step]
    return xs


def _loss(params, xs):
    return sum((p * x).sum() for p, x in zip(params, xs))


def _hub():
    return MessageHub.get_instance(f"pipeline-{id(object())}")


def _run_wrapper(opt_cls, wrapper_cls, norm_type, steps=60, **wrapper_kw):
    params = _params()
    opt = opt_cls(params, lr=1e-2, weight_decay=1e-2)
    wrapper = wrapper_cls(
        optimizer=opt, clip_grad=dict(max_norm=2.0, norm_type=norm_type), **wrapper_kw
    )
    wrapper.message_hub = _hub()
    scales, norms, snapshots = [], [], []
    for step in range(steps):
        wrapper.update_params(_loss(params, _inputs(step)))
        if isinstance(wrapper, fastopt.AmpOptimWrapper):
            scales.append(wrapper.loss_scaler.get_scale())
        norms.append(float(wrapper.message_hub.get_scalar("train/grad_norm").current()))
        snapshots.append([p.detach().clone() for p in params])
    return params, scales, norms, snapshots


def _torch_reference(norm_type, steps=60):
    """GradScaler + unscale_ + clip_grad_norm_ + step + update, written out."""
    params = _params()
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=1e-2, foreach=False)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=5)
    scales, norms = [], []
    for step in range(steps):
        scaler.scale(_loss(params, _inputs(step))).backward()
        scaler.unscale_(opt)
        norms.append(float(torch.nn.utils.clip_grad_norm_(params, 2.0, norm_type=norm_type)))
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        scales.append(scaler.get_scale())
    return params, scales, norms


AMP = dict(loss_scale=dict(init_scale=2.0**10, growth_interval=5), dtype="float16")


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
def test_amp_pipeline_matches_torch(norm_type):
    fused, f_scales, f_norms, f_snaps = _run_wrapper(
        fastopt.FusedAdamW, fastopt.AmpOptimWrapper, norm_type, **AMP
    )
    ref, r_scales, r_norms = _torch_reference(norm_type)
    assert f_scales == r_scales  # same skipped steps, same growth and backoff
    assert any(b < a for a, b in zip(f_scales, f_scales[1:])), "some steps must overflow"
    for a, b in zip(f_norms, r_norms):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)
    for step in INF_STEPS:  # a skipped step leaves every param unchanged
        for a, b in zip(f_snaps[step - 1], f_snaps[step]):
            assert torch.equal(a, b)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf, 3.0])
@pytest.mark.parametrize("amp", [False, True], ids=["plain", "amp"])
def test_fused_path_equals_torch_fallback(norm_type, amp):
    """The same wrapper over FusedAdamW and over torch.optim.AdamW gives the same numbers."""
    wrapper_cls = fastopt.AmpOptimWrapper if amp else fastopt.OptimWrapper
    kw = AMP if amp else {}
    fused, f_scales, f_norms, _ = _run_wrapper(
        fastopt.FusedAdamW, wrapper_cls, norm_type, steps=50, **kw
    )
    torch_adamw = lambda params, **k: torch.optim.AdamW(params, foreach=False, **k)  # noqa: E731
    ref, r_scales, r_norms, _ = _run_wrapper(torch_adamw, wrapper_cls, norm_type, steps=50, **kw)
    assert f_scales == r_scales
    for a, b in zip(f_norms, r_norms):
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-5)
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize(
    "opt_name,kw",
    [("FusedSGD", dict(lr=0.05, momentum=0.9)), ("FusedLARS", dict(lr=0.5, momentum=0.9))],
)
def test_clip_with_other_fused_optimizers(opt_name, kw):
    ref_cls = {"FusedSGD": lambda p, **k: torch.optim.SGD(p, foreach=False, **k)}
    from optim_reference import ReferenceLARS

    ref_cls["FusedLARS"] = ReferenceLARS
    params, ref_params = _params(), _params()
    wrapper = fastopt.OptimWrapper(
        getattr(fastopt, opt_name)(params, **kw), clip_grad=dict(max_norm=1.0)
    )
    wrapper.message_hub = _hub()
    ref = ref_cls[opt_name](ref_params, **kw)
    for step in range(1, 7):  # finite steps only
        xs = _inputs(step)
        wrapper.update_params(_loss(params, xs))
        _loss(ref_params, xs).backward()
        torch.nn.utils.clip_grad_norm_(ref_params, 1.0)
        ref.step()
        ref.zero_grad()
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


def test_grads_are_left_untouched():
    params = _params()
    opt = fastopt.FusedAdamW(params, lr=1e-2)
    xs = _inputs(1)
    _loss(params, xs).backward()
    scale = torch.tensor(8.0)
    opt.fused_step(
        max_norm=0.5, loss_scale=scale, found_inf=torch.zeros(()), norm_out=torch.zeros(())
    )
    for p, x in zip(params, xs):
        assert torch.equal(p.grad, x)


def test_error_if_nonfinite_raises_before_any_change():
    params = _params()
    wrapper = fastopt.OptimWrapper(
        fastopt.FusedSGD(params, lr=0.1), clip_grad=dict(max_norm=1.0, error_if_nonfinite=True)
    )
    wrapper.message_hub = _hub()
    before = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        wrapper.update_params(_loss(params, _inputs(7)))
    for a, b in zip(before, params):
        assert torch.equal(a, b.detach())


def test_plain_wrapper_applies_nonfinite_updates_like_torch():
    """Without a loss scaler nothing is skipped (MMEngine's OptimWrapper does not skip)."""
    fused, _, f_norms, _ = _run_wrapper(fastopt.FusedSGD, fastopt.OptimWrapper, 2.0, steps=9)
    sgd = lambda params, **k: torch.optim.SGD(params, foreach=False, **k)  # noqa: E731
    ref, _, r_norms, _ = _run_wrapper(sgd, fastopt.OptimWrapper, 2.0, steps=9)
    assert math.isinf(f_norms[7]) and math.isinf(r_norms[7])
    for a, b in zip(fused, ref):
        torch.testing.assert_close(a.detach(), b.detach(), equal_nan=True)


def test_grad_norm_is_logged_lazily_as_a_tensor():
    params = _params()
    wrapper = fastopt.OptimWrapper(fastopt.FusedAdamW(params), clip_grad=dict(max_norm=1.0))
    wrapper.message_hub = _hub()
    wrapper.update_params(_loss(params, _inputs(2)))
    expected = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(x) for x in _inputs(2)])
    )
    assert float(wrapper.message_hub.get_scalar("train/grad_norm").current()) == pytest.approx(
        float(expected), rel=1e-6
    )


def test_value_clipping_uses_torch_then_the_fused_step():
    params, ref_params = _params(), _params()
    wrapper = fastopt.OptimWrapper(
        fastopt.FusedSGD(params, lr=0.1), clip_grad=dict(type="value", clip_value=0.5)
    )
    ref = torch.optim.SGD(ref_params, lr=0.1)
    xs = _inputs(3)
    wrapper.update_params(_loss(params, xs))
    _loss(ref_params, xs).backward()
    torch.nn.utils.clip_grad_value_(ref_params, 0.5)
    ref.step()
    for a, b in zip(params, ref_params):
        torch.testing.assert_close(a.detach(), b.detach())


@pytest.mark.parametrize("bad", [dict(max_norm=-1.0), dict(norm_type=0), dict(norm_type="two")])
def test_fused_step_argument_errors(bad):
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.randn(3)
    with pytest.raises(ValueError):
        fastopt.FusedSGD([p], lr=0.1).fused_step(**bad)


def test_fused_step_scalar_tensor_errors():
    p = torch.nn.Parameter(torch.randn(3))
    p.grad = torch.randn(3)
    with pytest.raises(TypeError, match="loss_scale must be a one-element float32 tensor"):
        fastopt.FusedSGD([p], lr=0.1).fused_step(
            loss_scale=torch.tensor([2.0], dtype=torch.float64)
        )


def test_amp_wrapper_takes_the_fused_path():
    """torch's sequence unscales grads in place; the fused pipeline reads them scaled."""
    params = _params()
    wrapper = fastopt.AmpOptimWrapper(
        optimizer=fastopt.FusedAdamW(params), clip_grad=dict(max_norm=1.0), **AMP
    )
    wrapper.message_hub = _hub()
    xs = _inputs(2)
    wrapper.backward(_loss(params, xs))
    wrapper.step()
    for p, x in zip(params, xs):
        assert torch.equal(p.grad, x * 2.0**10)
    assert wrapper.optimizer._plan is not None


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_two_phase_pipeline_equals_one_phase(tmp_path, norm_type):
    """process_group: reduction pass, all-reduce, update pass (here a group of one)."""
    import torch.distributed as dist

    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        results = []
        for group in (None, dist.group.WORLD):
            params = _params()
            opt = fastopt.FusedAdamW(params, lr=1e-2)
            norm, found = torch.zeros(()), torch.zeros(())
            for step in (1, 7, 2):  # step 7 carries an inf: skipped
                for p, x in zip(params, _inputs(step)):
                    p.grad = x * 4.0
                # a grad in another layout: the engine reads a temporary copy in both phases
                params[0].grad = params[0].grad.t().contiguous().t()
                opt.fused_step(
                    max_norm=1.0,
                    norm_type=norm_type,
                    loss_scale=torch.tensor(4.0),
                    found_inf=found,
                    norm_out=norm,
                    process_group=group,
                )
            results.append(([p.detach().clone() for p in params], float(norm), float(found)))
        (a, na, fa), (b, nb, fb) = results
        for x, y in zip(a, b):
            assert torch.equal(x, y)
        assert na == nb and fa == fb == 0.0
    finally:
        dist.destroy_process_group()
