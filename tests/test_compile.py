"""Fused optimizers inside torch.compile: the step is the custom op ``fastopt::step``.

Most tests compile with ``aot_eager`` (functionalization and the op's mutation handling, without
the C++ code generation of CPU inductor, which takes minutes on a shared 2-core machine); one
runs the default inductor backend.
"""

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from fastopt.optim import FusedAdam, FusedAdamW, FusedLAMB, FusedSGD

pytestmark = pytest.mark.usefixtures("one_thread")

STEPS = 20

OPTIMIZERS = {
    "adamw": lambda ps: FusedAdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam-amsgrad": lambda ps: FusedAdam(ps, lr=1e-2, amsgrad=True),
    "sgd-nesterov": lambda ps: FusedSGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "lamb": lambda ps: FusedLAMB(ps, lr=1e-2, weight_decay=0.01),
}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(12, 24), torch.nn.GELU(), torch.nn.LayerNorm(24), torch.nn.Linear(24, 5)
    )


def _train(make, backend=None, steps=STEPS, device="cpu", eager_step=False):
    """``steps`` training steps with an lr scheduler changing lr every step; the params after
    them, and the number of frames compiled after each step (None: eager). ``eager_step``:
    the optimizer step runs outside the compiled graphs (a reference whose forward and
    backward are compiled as the same graphs)."""
    model = _model().to(device)
    opt = make(model.parameters())
    # a Python-float lr that changes every step: torch's own compiled optimizers recompile here
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1.0 / (1 + 0.37 * i))
    gen = torch.Generator().manual_seed(1)
    batches = [
        (
            torch.randn(16, 12, generator=gen).to(device),
            torch.randn(16, 5, generator=gen).to(device),
        )
        for _ in range(steps)
    ]

    def train_step(x, y):
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        if eager_step:
            torch._dynamo.disable(opt.step)()
        else:
            opt.step()
        opt.zero_grad()
        return loss

    counter = CompileCounterWithBackend(backend) if backend else None
    step = torch.compile(train_step, backend=counter) if counter else train_step
    frames = []
    for x, y in batches:
        step(x, y)
        sched.step()
        frames.append(counter.frame_count if counter else None)
    return [p.detach().clone() for p in model.parameters()], opt, frames


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_train_step_is_eager_and_does_not_recompile(name):
    """Bitwise eager's params over 20 steps (the op runs the same engine call on the same
    values), and the frames compiled in step 1 are all there are: lr changes are read by the
    engine, not guarded by dynamo."""
    eager, eager_opt, _ = _train(OPTIMIZERS[name])
    compiled, opt, frames = _train(OPTIMIZERS[name], backend="aot_eager")
    _assert_same(eager, compiled)
    assert frames[0] >= 1
    assert frames == [frames[0]] * STEPS, frames
    # states as eager's, created by the op on the first compiled step
    for p, q in zip(
        (p for g in eager_opt.param_groups for p in g["params"]),
        (p for g in opt.param_groups for p in g["params"]),
    ):
        for key, value in eager_opt.state[p].items():
            torch.testing.assert_close(opt.state[q][key], value, rtol=0, atol=0)
    assert opt.param_groups[0]["lr"] == eager_opt.param_groups[0]["lr"] != 1e-2


# inductor's first compile (about 12 s): CI runs it (`pytest -m slow`)
@pytest.mark.slow
def test_compiled_train_step_inductor():
    """The default backend (inductor re-inplaces the op: it gets the params themselves).
    Inductor's fused forward and backward round differently from eager's, so the reference
    compiles them too and steps eagerly outside the graphs."""
    eager, _, _ = _train(OPTIMIZERS["adamw"], backend="inductor", steps=6, eager_step=True)
    compiled, _, frames = _train(OPTIMIZERS["adamw"], backend="inductor", steps=6)
    _assert_same(eager, compiled)
    assert frames == [frames[0]] * 6


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["adamw", "sgd-nesterov"])
def test_compiled_train_step_cuda(name):
    eager, _, _ = _train(OPTIMIZERS[name], backend="inductor", device="cuda", eager_step=True)
    compiled, _, frames = _train(OPTIMIZERS[name], backend="inductor", device="cuda")
    _assert_same(eager, compiled)
    assert frames == [frames[0]] * STEPS


def _with_grads(seed: int):
    model = _model(seed)
    model(torch.randn(8, 12)).square().mean().backward()
    return model


def test_fullgraph_step_alone():
    """``fullgraph=True`` on a function that only calls ``optimizer.step()``: one graph, no
    break, and the op's result is eager's."""
    ref = _with_grads(3)
    ref_opt = FusedSGD(ref.parameters(), lr=0.1, momentum=0.9)
    model = _with_grads(3)
    opt = FusedSGD(model.parameters(), lr=0.1, momentum=0.9)
    counter = CompileCounterWithBackend("aot_eager")
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return counter(gm, inputs)

    step = torch.compile(lambda: opt.step(), fullgraph=True, backend=backend)
    for i in range(4):
        for group in (*ref_opt.param_groups, *opt.param_groups):
            group["lr"] = 0.1 / (i + 1)
        ref_opt.step()
        step()
    assert counter.frame_count == 1
    (graph,) = graphs
    calls = [n.target for n in graph.graph.nodes if n.op == "call_function"]
    assert calls.count(torch.ops.fastopt.step) == 1
    assert all(  # and nothing else but no_grad's switches
        t is torch.ops.fastopt.step or t is torch._C._set_grad_enabled for t in calls
    ), calls
    _assert_same(list(ref.parameters()), list(model.parameters()))


def test_fullgraph_fused_step_pipeline():
    """fused_step's clipping, inf check and norm output inside one graph: the op writes
    found_inf and norm_out (declared mutated), as eager does."""
    results = []
    for compiled in (False, True):
        model = _with_grads(4)
        for p in model.parameters():
            p.grad.mul_(1024.0)
        opt = FusedAdamW(model.parameters(), lr=1e-2)
        scale = torch.tensor(1024.0)
        found_inf = torch.zeros(())
        norm = torch.zeros(())

        def step(opt=opt, scale=scale, found_inf=found_inf, norm=norm):
            opt.fused_step(
                max_norm=0.1, norm_type="inf", loss_scale=scale, found_inf=found_inf, norm_out=norm
            )
            return norm * 2  # reads the norm the op wrote

        fn = torch.compile(step, fullgraph=True, backend="aot_eager") if compiled else step
        doubled = [fn() for _ in range(3)]
        results.append(([p.detach() for p in model.parameters()], norm, found_inf, doubled))
    (ep, en, ef, ed), (cp, cn, cf, cd) = results
    _assert_same(ep, cp)
    assert en.item() > 0.1 and torch.equal(en, cn) and torch.equal(ef, cf)
    _assert_same(ed, cd)


def test_op_steps_copies_and_given_grads():
    """The op's real implementation called as a functionalizing backend calls it: with clones
    of the params (stepped, copied back into the clones) and grads other than ``p.grad``
    (used for this step, ``p.grad`` restored)."""
    ref = _with_grads(5)
    ref_opt = FusedAdamW(ref.parameters(), lr=1e-2)
    model = _with_grads(5)
    opt = FusedAdamW(model.parameters(), lr=1e-2)
    params = list(model.parameters())
    old_grads = [p.grad for p in params]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(ref.parameters(), grads):
        p.grad = g.clone()
    ref_opt.step()
    before = [p.detach().clone() for p in params]
    clones = [p.detach().clone() for p in params]
    torch.ops.fastopt.step(opt._op_handle, clones, grads, False, None, 2.0, None, None, None)
    _assert_same(list(ref.parameters()), clones)
    _assert_same(list(ref.parameters()), params)  # the optimizer's own params too
    assert all(p.grad is g for p, g in zip(params, old_grads))
    assert not any(torch.equal(a, b) for a, b in zip(before, params))
    # tensors over the params' own memory (not the same objects) are stepped in place
    for p in ref.parameters():
        p.grad = torch.ones_like(p)
    ref_opt.step()
    aliases = [p.detach() for p in params]
    ones = [torch.ones_like(p) for p in params]
    torch.ops.fastopt.step(opt._op_handle, aliases, ones, False, None, 2.0, None, None, None)
    _assert_same(list(ref.parameters()), params)


def test_edited_param_groups_are_refused():
    """A param list edited in place after compiling is not what the graph hands the op."""
    model = _with_grads(6)
    opt = FusedSGD(model.parameters(), lr=0.1)
    step = torch.compile(lambda: opt.step(), backend="aot_eager")
    step()
    extra = torch.nn.Parameter(torch.zeros(3))
    extra.grad = torch.ones(3)
    opt.param_groups[0]["params"].append(extra)
    with pytest.raises(RuntimeError, match="not the optimizer's params any more"):
        step()
    step()  # re-synced: the guard on the param list recompiles
    assert torch.equal(extra.detach(), torch.full((3,), -0.1))


def test_op_schema():
    """Mutation annotations as the graph needs them, and never inside a CUDA graph."""
    op = torch.ops.fastopt.step.default
    mutated = [a.name for a in op._schema.arguments if a.alias_info and a.alias_info.is_write]
    assert mutated == ["params", "found_inf", "norm_out"]
    assert torch.Tag.cudagraph_unsafe in op.tags


def test_add_param_group_and_copies_have_their_own_handle():
    model = _with_grads(7)
    opt = FusedSGD(list(model.parameters())[:2], lr=0.1)
    opt.add_param_group({"params": list(model.parameters())[2:], "lr": 0.01})
    assert len(opt._op_params) == len(list(model.parameters()))
    twin = copy.deepcopy(opt)
    assert twin._op_handle != opt._op_handle
    assert all(a is not b for a, b in zip(twin._op_params, opt._op_params))
    opt.load_state_dict(twin.state_dict())
    assert all(a is b for a, b in zip(opt._op_params, model.parameters()))
    for p in twin._op_params:
        p.grad = torch.ones_like(p)  # (a deep copy of a param has no grad)
    before = [p.detach().clone() for p in twin._op_params]
    torch.compile(lambda: twin.step(), backend="aot_eager")()
    assert not any(torch.equal(a, b) for a, b in zip(before, twin._op_params))
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters())
    )  # the original untouched


def test_optim_wrapper_clip_inside_compile():
    """OptimWrapper.update_params with norm clipping inside a compiled function: fused_step
    through the op, bitwise eager."""
    from fastopt.wrapper import OptimWrapper

    results = []
    for compiled in (False, True):
        model = _model(8)
        wrapper = OptimWrapper(
            FusedAdamW(model.parameters(), lr=1e-2), clip_grad=dict(max_norm=0.05)
        )
        x = torch.randn(16, 12, generator=torch.Generator().manual_seed(2))

        def step(x, model=model, wrapper=wrapper):
            loss = model(x).square().mean()
            wrapper.update_params(loss)
            return loss

        fn = torch.compile(step, backend="aot_eager") if compiled else step
        for _ in range(5):
            fn(x)
        results.append([p.detach() for p in model.parameters()])
    _assert_same(*results)
