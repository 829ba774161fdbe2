"""Memory safety at the Optimizer contract's edges: edits of optimizer.state, params and grads
swapped under the plan, rejected steps that change nothing, tensor subclasses.

Every case compares with torch.optim where torch defines the behaviour; the randomized sequence
runs in a child process, so a crash fails the test instead of killing the run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import fastopt_subprocess_env

import fastopt
from fastopt.optim.base import FusedOptimizer

PAIRS = {
    "adam": (fastopt.FusedAdam, torch.optim.Adam, dict(lr=0.1, weight_decay=0.01)),
    "adam-amsgrad": (fastopt.FusedAdam, torch.optim.Adam, dict(lr=0.1, amsgrad=True)),
    "adamw": (fastopt.FusedAdamW, torch.optim.AdamW, dict(lr=0.1)),
    "sgd-momentum": (
        fastopt.FusedSGD,
        torch.optim.SGD,
        dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
    ),
    "sgd-dampening": (fastopt.FusedSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.5, dampening=0.3)),
}


def clear(o, p):
    o.state[p].clear()


def delete(o, p):
    del o.state[p]


def new_dict(o, p):
    o.state[p] = {}


def replace_first_state(o, p):
    key = next(k for k in o.state[p] if k != "step")
    o.state[p][key] = torch.full_like(p, 0.5)


def state_data_swapped(o, p):
    key = next(k for k in o.state[p] if k != "step")
    o.state[p][key].data = torch.full_like(p, 0.25)


def state_zeroed_in_place(o, p):
    for v in o.state[p].values():
        v.zero_()


def step_reset(o, p):
    if "step" in o.state[p]:
        o.state[p]["step"] = torch.tensor(0.0)


def step_reset_in_place(o, p):
    if "step" in o.state[p]:
        o.state[p]["step"].zero_()


def step_as_float(o, p):
    """A plain number, as torch < 1.12 stored (torch's own step now refuses it: fastopt takes
    it as that count)."""
    if "step" in o.state[p]:
        o.state[p]["step"] = 1.0 if isinstance(o, FusedOptimizer) else torch.tensor(1.0)


def state_of_another_dtype(o, p):
    """fastopt casts such a state to its state dtype (torch's Adam fails on it, its SGD keeps
    float64): the same values as torch with a float32 state."""
    key = next(k for k in o.state[p] if k != "step")
    value = o.state[p][key].double()
    o.state[p][key] = value if isinstance(o, FusedOptimizer) else value.float()


EDITS = [
    clear,
    delete,
    new_dict,
    replace_first_state,
    state_data_swapped,
    state_zeroed_in_place,
    step_reset,
    step_reset_in_place,
    step_as_float,
    state_of_another_dtype,
]


@pytest.mark.parametrize("edit", EDITS, ids=lambda f: f.__name__)
@pytest.mark.parametrize("pair", list(PAIRS))
def test_state_edits_behave_as_in_torch(pair, edit):
    fused_cls, torch_cls, kw = PAIRS[pair]
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64, 33)), torch.nn.Parameter(torch.randn(7))]
    refs = [torch.nn.Parameter(p.detach().clone()) for p in params]
    fused, ref = fused_cls(params, **kw), torch_cls(refs, **kw)
    for i in range(8):
        for p, r in zip(params, refs):
            g = torch.randn_like(p)
            p.grad, r.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
        if i == 2:
            edit(fused, params[0])
            edit(ref, refs[0])
        for p, r in zip(params, refs):
            torch.testing.assert_close(p, r, rtol=1e-5, atol=1e-6)
    for p, r in zip(params, refs):
        assert fused.state[p].keys() == ref.state[r].keys()
        for key, value in ref.state[r].items():
            torch.testing.assert_close(
                torch.as_tensor(fused.state[p][key]).float(), torch.as_tensor(value).float()
            )


def test_state_edits_between_steps_keep_one_engine_call():
    """An edit forces one rebuild, not a slow path forever."""
    p = torch.nn.Parameter(torch.randn(10))
    o = fastopt.FusedAdam([p], lr=0.1)
    p.grad = torch.randn(10)
    o.step()
    first = o._plan
    o.step()
    assert o._plan is first
    o.state[p].clear()
    o.step()
    rebuilt = o._plan
    assert rebuilt is not first
    o.step()
    assert o._plan is rebuilt


def test_partial_state_is_refused_like_torch():
    p, q = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    fused, ref = fastopt.FusedAdam([p], lr=0.1), torch.optim.Adam([q], lr=0.1)
    p.grad, q.grad = torch.ones(5), torch.ones(5)
    fused.step()
    ref.step()
    del fused.state[p]["exp_avg"], ref.state[q]["exp_avg"]
    with pytest.raises(KeyError):
        ref.step()
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"param group 0, param 0 .* no 'exp_avg'.*clear"):
        fused.step()
    assert torch.equal(p, before)


def test_amsgrad_switched_on_mid_run_starts_its_state():
    p = torch.nn.Parameter(torch.randn(6))
    o = fastopt.FusedAdam([p], lr=0.1)
    p.grad = torch.randn(6)
    o.step()
    o.param_groups[0]["amsgrad"] = True
    o.step()
    assert torch.equal(o.state[p]["max_exp_avg_sq"], o.state[p]["exp_avg_sq"])


@pytest.mark.parametrize("numel", [1000, 1 << 21])
def test_param_replaced_by_a_smaller_view_is_refused(numel):
    p = torch.nn.Parameter(torch.randn(numel))
    o = fastopt.FusedSGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.randn(numel)
    o.step()
    p.data = p.data[:10]
    p.grad = torch.randn(10)
    before = p.detach().clone()
    with pytest.raises(
        ValueError, match=r"param group 0, param 0 \(shape \(10,\).*'momentum_buffer' has shape"
    ):
        o.step()
    assert torch.equal(p, before)
    o.state[p].clear()  # the user's way out: the state restarts, as in torch
    o.step()
    assert o.state[p]["momentum_buffer"].shape == (10,)


@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_grad_smaller_than_its_param_is_refused(layout):
    big = torch.randn(1 << 20) if layout == "contiguous" else torch.randn(1 << 11, 1 << 10).t()
    p = torch.nn.Parameter(big)
    o = fastopt.FusedAdam([p], lr=0.1)
    p.grad = torch.randn_like(p)
    o.step()
    small = p.data[:5]
    big_data = p.data
    p.data = small
    p.grad = torch.randn_like(small)  # torch checks the grad against the current .data
    p.data = big_data  # ... so a .data swap afterwards leaves a grad smaller than the param
    assert p.grad.shape != p.shape
    before = p.detach().clone()
    with pytest.raises(ValueError, match=r"param group 0, param 0 .* grad of shape \(5"):
        o.step()
    assert torch.equal(p, before)


def test_param_whose_storage_was_resized_away_is_refused():
    p = torch.nn.Parameter(torch.randn(4096))
    o = fastopt.FusedSGD([p], lr=0.1, momentum=0.9)
    p.grad = torch.randn(4096)
    o.step()
    p.untyped_storage().resize_(0)  # what FSDP does to unsharded params between uses
    with pytest.raises(RuntimeError, match="param group 0, param 0 .* storage has 0"):
        o.step()
    p.untyped_storage().resize_(4096 * 4)
    o.step()


def test_grad_whose_storage_was_resized_away_is_refused():
    p = torch.nn.Parameter(torch.randn(4096))
    o = fastopt.FusedSGD([p], lr=0.1)
    p.grad = torch.randn(4096)
    o.step()
    p.grad.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match="its grad needs .* storage has 0"):
        o.step()


# ---- a rejected step changes nothing ----------------------------------------------------------


def _bad_sparse(extra):
    emb = torch.nn.Embedding(10, 4, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    return emb.weight, None


def _bad_int(extra):
    p = torch.nn.Parameter(torch.arange(4), requires_grad=False)
    p.grad = torch.arange(4)
    return p, None


def _bad_complex(extra):
    p = torch.nn.Parameter(torch.randn(4, dtype=torch.complex64))
    p.grad = torch.randn(4, dtype=torch.complex64)
    return p, None


def _bad_grad_dtype(extra):
    p = torch.nn.Parameter(torch.randn(4))
    data = p.data
    p.data = data.double()
    p.grad = torch.randn(4, dtype=torch.float64)  # torch checks the grad against .data ...
    p.data = data  # ... so a float64 grad of a float32 param takes a .data swap
    return p, None


def _bad_meta(extra):
    p = torch.nn.Parameter(torch.randn(4, device="meta"))
    p.grad = torch.randn(4, device="meta")
    return p, None


def _bad_lr(extra):
    p = torch.nn.Parameter(torch.randn(4))
    p.grad = torch.randn(4)
    return p, "abc"


def _bad_wrong_state(extra):
    p = torch.nn.Parameter(torch.randn(4))
    p.grad = torch.randn(4)
    extra["state"] = torch.zeros(3)
    return p, None


BAD = {
    "sparse grad": (_bad_sparse, RuntimeError, "sparse gradients"),
    "int param": (_bad_int, TypeError, "float32, float16 and bfloat16"),
    "complex param": (_bad_complex, TypeError, "float32, float16 and bfloat16"),
    "grad of a wrong dtype": (_bad_grad_dtype, TypeError, "grad dtype torch.float64 must be"),
    "meta next to cpu": (_bad_meta, RuntimeError, "all params must be on one device"),
    "lr a string": (_bad_lr, ValueError, "param group 1: 'lr' is not a number"),
    "state of a wrong shape": (_bad_wrong_state, ValueError, r"param group 1, param 0 .*shape"),
}


@pytest.mark.parametrize("case", list(BAD))
@pytest.mark.parametrize("pair", ["adam", "sgd-momentum"])
def test_rejected_step_changes_nothing(pair, case):
    """Validate everything, then create state, then run: after a refused step and a good one,
    results and the state dict equal torch's (which never saw the bad param)."""
    fused_cls, torch_cls, kw = PAIRS[pair]
    make_bad, error, match = BAD[case]
    torch.manual_seed(1)
    good = [torch.nn.Parameter(torch.randn(33)), torch.nn.Parameter(torch.randn(5, 3))]
    refs = [torch.nn.Parameter(p.detach().clone()) for p in good]
    extra: dict = {}
    bad, lr = make_bad(extra)
    opt = fused_cls([{"params": good}, {"params": [bad]}], **kw)
    if lr is not None:
        opt.param_groups[1]["lr"] = lr
    if "state" in extra:
        opt.state[bad][opt._state_spec(opt.param_groups[1]).names[0]] = extra["state"]
    ref = torch_cls(refs, **kw)
    for p, r in zip(good, refs):
        p.grad = torch.randn_like(p)
        r.grad = p.grad.clone()
    snapshot = [p.detach().clone() for p in good]

    def ids(state):
        return {id(k): {n: id(v) for n, v in s.items()} for k, s in state.items()}

    state_before = ids(opt.state)
    with pytest.raises(error, match=match):
        opt.step()
    assert all(torch.equal(p, s) for p, s in zip(good, snapshot))
    assert ids(opt.state) == state_before  # no state was created or replaced
    # the bad param leaves; a good step then matches torch exactly as if it never was there
    opt.param_groups.pop()
    opt.state.pop(bad, None)
    for _ in range(3):
        opt.step()
        ref.step()
    for p, r in zip(good, refs):
        torch.testing.assert_close(p, r)
    sd = opt.state_dict()
    into_torch = torch_cls([torch.nn.Parameter(r.detach().clone()) for r in refs], **kw)
    into_torch.load_state_dict(sd)
    assert sd["state"].keys() == ref.state_dict()["state"].keys()
    for i, s in ref.state_dict()["state"].items():
        assert sd["state"][i].keys() == s.keys()


def test_duplicate_params_in_one_group_are_refused_clearly():
    p = torch.nn.Parameter(torch.randn(3))
    with pytest.raises(ValueError, match="param group 0 lists param 1 twice"):
        fastopt.FusedAdam([p, p])
    q = torch.nn.Parameter(torch.randn(3))
    o = fastopt.FusedAdam([q])
    with pytest.raises(ValueError, match="param group 1 lists param 1 twice"):
        o.add_param_group({"params": [p, p]})
    assert len(o.param_groups) == 1
    o.param_groups[0]["params"].append(q)  # behind the optimizer's back
    q.grad = torch.randn(3)
    with pytest.raises(ValueError, match="param group 0, param 1 .* the same param appears twice"):
        o.step()
    assert not o.state


def test_params_sharing_memory_are_refused():
    buf = torch.randn(20)
    a, b = torch.nn.Parameter(buf[:12]), torch.nn.Parameter(buf[8:])
    o = fastopt.FusedSGD([a, b], lr=0.1)
    a.grad, b.grad = torch.randn(12), torch.randn(12)
    with pytest.raises(ValueError, match="param 1 .* shares memory with .* param 0"):
        o.step()
    # adjacent slices of one buffer are fine
    c, d = torch.nn.Parameter(buf[:10]), torch.nn.Parameter(buf[10:])
    o = fastopt.FusedSGD([c, d], lr=0.1)
    c.grad, d.grad = torch.ones(10), torch.ones(10)
    o.step()


# ---- tensor subclasses -------------------------------------------------------------------------


class PlainSubclass(torch.Tensor):
    """A subclass that changes no behaviour: handled as the tensor it is."""


def test_plain_tensor_subclass_is_handled_like_torch():
    torch.manual_seed(0)
    data = torch.randn(17)
    p = torch.nn.Parameter(data.clone().as_subclass(PlainSubclass))
    q = torch.nn.Parameter(data.clone())
    fused, ref = fastopt.FusedAdamW([p], lr=0.1), torch.optim.AdamW([q], lr=0.1)
    for _ in range(3):
        g = torch.randn(17)
        p.grad, q.grad = g.clone().as_subclass(PlainSubclass), g.clone()
        fused.step()
        ref.step()
    torch.testing.assert_close(p.detach().as_subclass(torch.Tensor), q.detach())


class LoggingSubclass(torch.Tensor):
    """Overrides __torch_function__: its data pointer may not be its values."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        return super().__torch_function__(func, types, args, kwargs or {})


def test_subclass_with_torch_function_is_refused_before_anything_changes():
    good = torch.nn.Parameter(torch.randn(4))
    bad = torch.nn.Parameter(torch.randn(4).as_subclass(LoggingSubclass))
    o = fastopt.FusedAdam([good, bad])
    good.grad, bad.grad = torch.randn(4), torch.randn(4)
    with pytest.raises(TypeError, match=r"param group 0, param 1 .*LoggingSubclass"):
        o.step()
    assert not o.state


def test_grad_that_becomes_a_subclass_is_refused():
    p = torch.nn.Parameter(torch.randn(4))
    o = fastopt.FusedSGD([p], lr=0.1)
    p.grad = torch.randn(4)
    o.step()
    p.grad = torch.randn(4).as_subclass(LoggingSubclass)
    with pytest.raises(TypeError, match="its grad is a .*LoggingSubclass"):
        o.step()


def test_fake_tensor_param_is_refused():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        p = torch.nn.Parameter(torch.randn(4))
        p.grad = torch.randn(4)
    o = fastopt.FusedAdam([p])
    with pytest.raises(TypeError, match="FakeTensor"):
        o.step()
    assert not o.state


def test_meta_param_is_refused():
    p = torch.nn.Parameter(torch.randn(4, device="meta"))
    p.grad = torch.randn(4, device="meta")
    o = fastopt.FusedAdam([p])
    with pytest.raises(RuntimeError, match="no engine for meta tensors"):
        o.step()
    assert not o.state


def test_dtensor_params_are_stepped_or_refused_without_a_crash(tmp_path):
    """Replicate and Shard DTensors step on their local shards (tests/test_fsdp2.py runs FSDP2
    over 2 processes); a Partial placement (unreduced sums) is refused before anything changes."""
    script = textwrap.dedent(
        """
        import torch, torch.distributed as dist, fastopt
        from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, init_device_mesh
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        mesh = init_device_mesh("cpu", (1,))
        for placement in (Replicate(), Shard(0)):
            data, grad = torch.randn(8), torch.randn(8)
            p = torch.nn.Parameter(DTensor.from_local(data.clone(), mesh, [placement]))
            q = torch.nn.Parameter(DTensor.from_local(data.clone(), mesh, [placement]))
            fused, ref = fastopt.FusedAdamW([p], lr=0.1), torch.optim.AdamW([q], lr=0.1)
            for _ in range(3):
                p.grad = DTensor.from_local(grad.clone(), mesh, [placement])
                q.grad = DTensor.from_local(grad.clone(), mesh, [placement])
                fused.step(); ref.step()
            torch.testing.assert_close(p.full_tensor(), q.full_tensor())
            assert isinstance(fused.state[p]["exp_avg"], DTensor)
        p = torch.nn.Parameter(DTensor.from_local(torch.randn(8), mesh, [Partial()]))
        p.grad = DTensor.from_local(torch.randn(8), mesh, [Partial()])
        o = fastopt.FusedAdamW([p])
        try:
            o.step()
        except TypeError as e:
            assert "placement P(sum)" in str(e) and "param group 0, param 0" in str(e), e
            assert not o.state
            print("refused")
        dist.destroy_process_group()
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # not the source tree, which has no compiled engine in CI
        env=fastopt_subprocess_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused" in out.stdout


# ---- a randomized sequence of public-API calls, in a child process ----------------------------

FUZZ = textwrap.dedent(
    """
    import copy, random, sys
    import torch, fastopt

    PAIRS = [
        (fastopt.FusedAdam, torch.optim.Adam, dict(lr=0.05, weight_decay=0.01)),
        (fastopt.FusedAdam, torch.optim.Adam, dict(lr=0.05, amsgrad=True)),
        (fastopt.FusedAdamW, torch.optim.AdamW, dict(lr=0.05)),
        (fastopt.FusedSGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9)),
        (fastopt.FusedSGD, torch.optim.SGD, dict(lr=0.05, momentum=0.9, nesterov=True)),
    ]
    SHAPES = [(1,), (33,), (70000,), (5, 7), (0,), (3, 4, 5)]

    def run(seed, n_ops):
        rng = random.Random(seed)
        torch.manual_seed(seed)
        fused_cls, torch_cls, kw = PAIRS[seed % len(PAIRS)]
        def new_pair():
            shape = rng.choice(SHAPES)
            p = torch.nn.Parameter(torch.randn(shape))
            if rng.random() < 0.3 and p.dim() == 2:
                p = torch.nn.Parameter(torch.randn(shape[::-1]).t())  # non-contiguous
            return p, torch.nn.Parameter(p.detach().clone())
        pairs = [new_pair() for _ in range(rng.randint(1, 4))]
        fused = fused_cls([a for a, _ in pairs], **kw)
        ref = torch_cls([b for _, b in pairs], **kw)
        for op_index in range(n_ops):
            op = rng.choice(["step"] * 6 + ["clear", "del", "newdict", "replace", "datasave",
                            "step0", "load", "load_ref", "add_group", "zero_grad", "lr",
                            "grad_none", "pdata"])
            i = rng.randrange(len(pairs))
            a, b = pairs[i]
            if op == "step":
                for x, y in pairs:
                    if rng.random() < 0.85:
                        g = torch.randn_like(x)
                        x.grad, y.grad = g.clone(), g.clone()
                fused.step(); ref.step()
            elif op in ("clear", "del", "newdict") and a in fused.state:
                if op == "clear":
                    fused.state[a].clear(); ref.state[b].clear()
                elif op == "del":
                    del fused.state[a]; del ref.state[b]
                else:
                    fused.state[a] = {}; ref.state[b] = {}
            elif op == "replace" and fused.state.get(a):
                keys = [k for k in ref.state[b] if k != "step" and torch.is_tensor(ref.state[b][k])]
                if keys:
                    k = rng.choice(keys)
                    v = torch.rand_like(b)
                    fused.state[a][k] = v.clone(); ref.state[b][k] = v.clone()
            elif op == "datasave" and fused.state.get(a):
                keys = [k for k in ref.state[b] if k != "step" and torch.is_tensor(ref.state[b][k])]
                if keys:
                    k = rng.choice(keys)
                    v = torch.rand_like(b)
                    fused.state[a][k].data = v.clone(); ref.state[b][k].data = v.clone()
            elif op == "step0" and "step" in fused.state.get(a, {}):
                fused.state[a]["step"] = torch.tensor(0.0); ref.state[b]["step"] = torch.tensor(0.0)
            elif op == "load":
                sd = copy.deepcopy(fused.state_dict())
                fused.load_state_dict(sd)
            elif op == "load_ref":
                fused.load_state_dict(copy.deepcopy(ref.state_dict()))
            elif op == "add_group" and len(pairs) < 8:
                x, y = new_pair()
                pairs.append((x, y))
                fused.add_param_group({"params": [x]}); ref.add_param_group({"params": [y]})
            elif op == "zero_grad":
                none = rng.random() < 0.5
                fused.zero_grad(set_to_none=none); ref.zero_grad(set_to_none=none)
            elif op == "lr":
                lr = rng.choice([0.01, 0.05, 0.1])
                fused.param_groups[0]["lr"] = lr; ref.param_groups[0]["lr"] = lr
            elif op == "grad_none":
                a.grad = None; b.grad = None
            elif op == "pdata":
                # the param's data replaced by a same-shaped tensor (as .to() / load would)
                v = torch.randn_like(b)
                a.data = v.clone(); b.data = v.clone()
            for x, y in pairs:
                if not torch.allclose(x, y, rtol=1e-4, atol=1e-5):
                    print(f"seed {seed}: op {op_index} ({op}) diverged", flush=True)
                    sys.exit(3)

    for seed in range(int(sys.argv[1]), int(sys.argv[2])):
        run(seed, 60)
    print("fuzz ok")
    """
)


@pytest.mark.parametrize("seeds", [(0, 20), (20, 40)])
def test_randomized_public_api_sequences_match_torch(tmp_path, seeds):
    script = tmp_path / "fuzz.py"
    script.write_text(FUZZ)
    out = subprocess.run(
        [sys.executable, str(script), *map(str, seeds)],
        capture_output=True,
        text=True,
        env=fastopt_subprocess_env(),
        timeout=600,
    )
    assert out.returncode == 0, (out.returncode, out.stdout[-2000:], out.stderr[-3000:])
    assert "fuzz ok" in out.stdout
