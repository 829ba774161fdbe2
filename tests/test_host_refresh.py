"""The per-step refresh on each path of its tensor reads (``_C.tensor_reads``): ``shim``, torch's
stable C shim on the at::Tensor a tensor object holds (what a step uses), and the fallbacks
``accessors`` (torch's C getters, called directly) and ``methods`` (the same with
``Tensor.data_ptr()``). Every path must step the same numbers as torch and catch the same edits
between steps (see also test_fused_safety.py, whose checks run here on every path).
"""

from __future__ import annotations

import functools
import subprocess
import sys

import pytest
import test_fused_safety as safety
import torch
from conftest import fastopt_subprocess_env

import fastopt
from fastopt._ext import require_C

PATHS = ["shim", "accessors", "methods"]


@pytest.fixture(params=PATHS)
def read_path(request):
    C = require_C()
    was = C.tensor_reads()
    assert C.tensor_reads(request.param) == request.param
    yield request.param
    C.tensor_reads(was)


def test_the_shim_path_is_used_with_this_torch():
    """The shim's functions are exported, the at::Tensor offset is found and every probe read
    agrees with torch's accessors: the refresh uses it. A torch where any of that fails falls
    back to the accessors, and this test says why."""
    from fastopt._ext import build_info

    C = require_C()
    assert C.tensor_reads_unavailable() == ""
    assert C.tensor_reads() == "shim"
    assert build_info()["tensor_reads"] == "shim"  # what `fastopt info` shows


def test_an_unknown_path_is_refused():
    C = require_C()
    with pytest.raises(ValueError, match="no path 'fast'"):
        C.tensor_reads("fast")
    assert C.tensor_reads() == "shim"


def test_the_path_can_be_switched_off_at_startup(tmp_path):
    """FASTOPT_TENSOR_READS=accessors keeps the shim off for the process (and says so)."""
    code = (
        "import torch; from fastopt._ext import require_C; C = require_C(); "
        "p = torch.nn.Parameter(torch.ones(3)); p.grad = torch.ones(3); "
        "import fastopt; o = fastopt.FusedSGD([p], lr=0.5); o.step(); "
        "print(C.tensor_reads(), C.tensor_reads_unavailable(), p.tolist()); "
        "from fastopt._ext import build_info; print(build_info()['tensor_reads'])"
    )
    env = {**fastopt_subprocess_env(), "FASTOPT_TENSOR_READS": "accessors"}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        "accessors FASTOPT_TENSOR_READS=accessors [0.5, 0.5, 0.5]",
        "accessors (shim off: FASTOPT_TENSOR_READS=accessors)",
    ]


def test_switching_the_path_between_steps_rebuilds_and_steps_as_torch():
    C = require_C()
    p = torch.nn.Parameter(torch.randn(6))
    q = torch.nn.Parameter(p.detach().clone())
    fused, ref = fastopt.FusedAdamW([p], lr=0.1), torch.optim.AdamW([q], lr=0.1)
    try:
        for path in ["shim", "methods", "accessors", "shim"]:
            C.tensor_reads(path)
            g = torch.randn(6)
            p.grad, q.grad = g.clone(), g.clone()
            fused.step()
            ref.step()
            assert fused._plan.engine.refresh()[0] == 0  # the plan reads on this path now
    finally:
        C.tensor_reads("shim")
    torch.testing.assert_close(p, q)


def _grads(kind, params, gen, flat):
    """The next step's grads as a training loop leaves them: new tensors, the same tensors
    refilled, or views of one flat buffer refilled."""
    values = [torch.randn(p.shape, generator=gen) for p in params]
    if kind == "fresh":
        for p, v in zip(params, values):
            p.grad = v
    elif kind == "kept":
        for p, v in zip(params, values):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(v)
    else:
        offset = 0
        for p, v in zip(params, values):
            n = p.numel()
            if p.grad is None:
                p.grad = flat[offset : offset + n].view_as(p)
            p.grad.copy_(v)
            offset += n
    return values


SHAPES = [(16,), (3, 5), (1,), (7, 2, 3), (33,)]


@pytest.mark.parametrize("grads", ["fresh", "kept", "flat"])
@pytest.mark.parametrize("pair", ["adamw", "sgd-momentum", "adam-amsgrad"], ids=lambda name: name)
def test_steps_match_torch_on_every_path(read_path, pair, grads):
    fused_cls, torch_cls, kw = safety.PAIRS[pair]
    gen = torch.Generator().manual_seed(3)
    # params of both kinds the fast path reads (Parameter, plain leaf tensor) and a plain
    # subclass (read through the method on either path)
    base = [torch.randn(s, generator=gen) for s in SHAPES]
    params = [torch.nn.Parameter(b.clone()) for b in base[:3]]
    params.append(base[3].clone().requires_grad_())
    params.append(torch.nn.Parameter(base[4].clone().as_subclass(safety.PlainSubclass)))
    refs = [torch.nn.Parameter(b.clone()) for b in base]
    fused, ref = fused_cls(params, **kw), torch_cls(refs, **kw)
    flat = torch.zeros(sum(p.numel() for p in params) + 5)[5:]  # views at an offset
    for _ in range(5):
        values = _grads(grads, params, gen, flat)
        for r, v in zip(refs, values):
            r.grad = v.clone()
        fused.step()
        ref.step()
    for p, r in zip(params, refs):
        torch.testing.assert_close(p.detach().as_subclass(torch.Tensor), r.detach())


def _adamw_next_to_torch(steps, edit_after):
    """An 8-element param stepped by FusedAdamW next to a copy stepped by torch's AdamW on the
    same grads; edit_after(i, fused, ref, p, q) runs after step i. Returns the two params."""
    p = torch.nn.Parameter(torch.randn(8))
    q = torch.nn.Parameter(p.detach().clone())
    fused, ref = fastopt.FusedAdamW([p], lr=0.1), torch.optim.AdamW([q], lr=0.1)
    for i in range(steps):
        g = torch.randn(8)
        p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
        edit_after(i, fused, ref, p, q)
    return p, q


def _step_uses_new_param_storage():
    """p.data = another tensor between steps: the step updates the new memory (as torch)."""

    def swap(i, fused, ref, p, q):
        if i == 1:
            v = torch.randn(8)
            p.data, q.data = v.clone(), v.clone()

    torch.testing.assert_close(*_adamw_next_to_torch(4, swap))


def _kept_grad_given_another_storage():
    """The same grad object, its storage swapped (.data) or moved (set_): the step reads the
    new values."""
    p = torch.nn.Parameter(torch.randn(8))
    q = torch.nn.Parameter(p.detach().clone())
    fused, ref = fastopt.FusedSGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    p.grad, q.grad = torch.ones(8), torch.ones(8)
    fused.step()
    ref.step()
    v = torch.randn(8)
    p.grad.data, q.grad.data = v.clone(), v.clone()
    fused.step()
    ref.step()
    w = torch.randn(8)
    p.grad.set_(w.clone())
    q.grad.set_(w.clone())
    fused.step()
    ref.step()
    torch.testing.assert_close(p, q)


def _kept_grad_given_another_dtype_is_refused():
    p = torch.nn.Parameter(torch.randn(8))
    o = fastopt.FusedSGD([p], lr=0.1)
    p.grad = torch.randn(8)
    o.step()
    p.grad.data = torch.randn(8, dtype=torch.float64)
    before = p.detach().clone()
    with pytest.raises(TypeError, match="grad dtype torch.float64"):
        o.step()
    assert torch.equal(p, before)


def _kept_grad_transposed_in_place_is_stepped_as_torch():
    """The same grad object, transposed in place (same address, another layout)."""
    p = torch.nn.Parameter(torch.randn(4, 4))
    q = torch.nn.Parameter(p.detach().clone())
    fused, ref = fastopt.FusedSGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    g = torch.randn(4, 4)
    p.grad, q.grad = g.clone(), g.clone()
    fused.step()
    ref.step()
    p.grad.t_()
    q.grad.t_()
    fused.step()
    ref.step()
    torch.testing.assert_close(p, q)


def _kept_grad_shrunk_in_place_is_refused():
    p = torch.nn.Parameter(torch.randn(8))
    o = fastopt.FusedSGD([p], lr=0.1)
    p.grad = torch.randn(8)
    o.step()
    p.grad.data = p.grad.data[:4]  # same address, fewer elements
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"grad of shape \(4,\)"):
        o.step()
    assert torch.equal(p, before)


def _param_given_another_dtype_in_place_is_seen():
    """p.data = p.data.view(torch.float16) of a bfloat16 param: the same address and size,
    another dtype. With the grad kept (bfloat16) the step refuses the pair, as for any param
    of that dtype; with a float16 grad it updates float16 values, not bfloat16 bits. (Against
    the rule, p - lr * g in float32 rounded once: torch's float16 add_ on the CPU rounds lr to
    float16 first.)"""
    gen = torch.Generator().manual_seed(11)
    p = torch.nn.Parameter(torch.randn(8, generator=gen).bfloat16())
    o = fastopt.FusedSGD([p], lr=0.1)
    expected = p.detach().clone()
    for i in range(3):
        if i != 1:
            p.grad = torch.randn(8, generator=gen).to(p.dtype)
        g = p.grad.detach().clone()
        o.step()
        expected = (expected.float() - 0.1 * g.float()).to(p.dtype)
        assert torch.equal(p.detach(), expected)
        if i == 0:
            p.data = p.data.view(torch.float16)
            expected = expected.view(torch.float16)
            with pytest.raises(TypeError, match="grad dtype torch.bfloat16 must be torch.float16"):
                o.step()
            assert torch.equal(p.detach(), expected)
            p.grad.data = p.grad.data.view(torch.float16)
    assert p.dtype == torch.float16


def _state_shrunk_in_place_is_refused():
    """A state tensor of optimizer.state given fewer elements of its own storage (.data): the
    same object at the same address, so only its size tells."""
    p = torch.nn.Parameter(torch.randn(8))
    o = fastopt.FusedAdamW([p], lr=0.1)
    p.grad = torch.randn(8)
    o.step()
    o.state[p]["exp_avg"].data = o.state[p]["exp_avg"].data[:4]
    before = p.detach().clone()
    with pytest.raises(ValueError, match="exp_avg"):
        o.step()
    assert torch.equal(p, before)


def _state_given_another_dtype_in_place_is_refused():
    """A state tensor viewed as another dtype of the same bytes (.data: a 16-element bfloat16
    state for an 8-element param): the refresh sees it and the step refuses it, naming the
    state; viewed back, the steps go on as torch's."""

    def view(i, fused, ref, p, q):
        if i == 0:
            s = fused.state[p]["exp_avg"]
            s.data = s.data.view(torch.bfloat16)
            with pytest.raises(ValueError, match="exp_avg"):
                fused.step()
            s.data = s.data.view(torch.float32)

    torch.testing.assert_close(*_adamw_next_to_torch(3, view))


def _step_count_edited_in_place_is_seen():
    """optimizer.state's step count given new storage (.data =, set_) or written in place
    between steps: the next step counts on from the new value, as torch's, and state shows it
    (the plan's counts are views of one buffer; a moved view is seen, not left behind)."""
    edits = {
        1: lambda s: setattr(s, "data", torch.tensor(10.0)),
        2: lambda s: s.set_(torch.tensor(20.0)),
        3: lambda s: s.fill_(30.0),
    }

    def edit(i, fused, ref, p, q):
        if i in edits:
            edits[i](fused.state[p]["step"])
            edits[i](ref.state[q]["step"])
        assert fused.state[p]["step"].item() == ref.state[q]["step"].item()
        if i == 4:
            assert ref.state[q]["step"].item() == 31.0

    torch.testing.assert_close(*_adamw_next_to_torch(5, edit))


CHECKS = [
    _step_count_edited_in_place_is_seen,
    _param_given_another_dtype_in_place_is_seen,
    _state_shrunk_in_place_is_refused,
    _state_given_another_dtype_in_place_is_refused,
    _step_uses_new_param_storage,
    _kept_grad_given_another_storage,
    _kept_grad_given_another_dtype_is_refused,
    _kept_grad_transposed_in_place_is_stepped_as_torch,
    _kept_grad_shrunk_in_place_is_refused,
    functools.partial(safety.test_param_replaced_by_a_smaller_view_is_refused, 1000),
    functools.partial(safety.test_grad_smaller_than_its_param_is_refused, "contiguous"),
    functools.partial(safety.test_grad_smaller_than_its_param_is_refused, "strided"),
    safety.test_param_whose_storage_was_resized_away_is_refused,
    safety.test_grad_whose_storage_was_resized_away_is_refused,
    safety.test_grad_that_becomes_a_subclass_is_refused,
    functools.partial(
        safety.test_state_edits_behave_as_in_torch, "adamw", safety.state_data_swapped
    ),
    functools.partial(
        safety.test_state_edits_behave_as_in_torch, "sgd-momentum", safety.replace_first_state
    ),
]


@pytest.mark.parametrize(
    "check", CHECKS, ids=lambda f: getattr(f, "__name__", None) or f.func.__name__
)
def test_edits_between_steps_are_caught_on_every_path(read_path, check):
    check()


@pytest.mark.cuda
def test_kept_grad_moved_to_another_device_is_refused(read_path):
    """The same grad object given another device's tensor (.data, which torch allows between
    cpu and cuda): the CPU engine must not read a cuda address, nor the CUDA engine a host one.
    (torch refuses .data = a meta tensor, so no cpu-only edit reaches this check.)"""
    for dev, other in (("cpu", "cuda"), ("cuda", "cpu")):
        p = torch.nn.Parameter(torch.randn(8, device=dev))
        o = fastopt.FusedSGD([p], lr=0.1)
        p.grad = torch.randn(8, device=dev)
        o.step()
        p.grad.data = p.grad.data.to(other)
        before = p.detach().clone()
        with pytest.raises(ValueError, match=f"on {other}"):
            o.step()
        assert torch.equal(p, before)


@pytest.mark.parametrize("pair", ["adamw", "sgd-momentum", "adam-amsgrad"], ids=lambda n: n)
def test_tensors_of_one_group_at_different_step_counts(pair):
    """The CPU engine shares one tensor's prepared hyperparameters with the next of its group
    at the same step count (and first-step flag): tensors whose states restarted mid-run, next
    to ones that did not, in two groups with different values, step as torch."""
    fused_cls, torch_cls, kw = safety.PAIRS[pair]
    gen = torch.Generator().manual_seed(5)
    base = [torch.randn(9, generator=gen) for _ in range(6)]
    params = [torch.nn.Parameter(b.clone()) for b in base]
    refs = [torch.nn.Parameter(b.clone()) for b in base]

    def groups(ps):
        return [{"params": ps[:3]}, {"params": ps[3:], "lr": kw["lr"] / 3}]

    fused, ref = fused_cls(groups(params), **kw), torch_cls(groups(refs), **kw)
    for i in range(6):
        for p, r in zip(params, refs):
            g = torch.randn(9, generator=gen)
            p.grad, r.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
        if i in (1, 3):
            for k in (1, 4) if i == 1 else (0, 1):
                fused.state[params[k]].clear()
                ref.state[refs[k]].clear()
    for p, r in zip(params, refs):
        torch.testing.assert_close(p, r)
