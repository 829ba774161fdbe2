"""State dicts use torch's keys and layout: checkpoints move between torch.optim and fastopt."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from lion_pytorch import Lion

import fastopt
from fastopt.benchmark.references import ReferenceAdan, ReferenceLamb

PAIRS = [
    (torch.optim.SGD, fastopt.FusedSGD, dict(lr=0.05, momentum=0.9, weight_decay=1e-3)),
    (torch.optim.Adam, fastopt.FusedAdam, dict(lr=1e-2, amsgrad=True)),
    (torch.optim.AdamW, fastopt.FusedAdamW, dict(lr=1e-2, weight_decay=0.05)),
    (torch.optim.Adagrad, fastopt.FusedAdagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=1e-3)),
    (
        torch.optim.RMSprop,
        fastopt.FusedRMSprop,
        dict(lr=1e-2, momentum=0.9, centered=True, weight_decay=1e-3),
    ),
    (Lion, fastopt.FusedLion, dict(lr=1e-3, weight_decay=0.1)),
    # timm's rules and state layouts (group-level step), as fastopt.benchmark.references
    (ReferenceLamb, fastopt.FusedLAMB, dict(lr=1e-2, weight_decay=0.01)),
    (ReferenceAdan, fastopt.FusedAdan, dict(lr=1e-2, weight_decay=0.02)),
]


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _groups(model):
    return [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 3e-3}]


def _train(model, opt, steps, seed):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        x = torch.randn(16, 7, generator=g)
        model(x).pow(2).mean().backward()
        opt.step()


def _roundtrip(sd):
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("torch_cls,fused_cls,kw", PAIRS, ids=lambda x: getattr(x, "__name__", ""))
@pytest.mark.parametrize("direction", ["torch_to_fused", "fused_to_torch"])
def test_state_dict_moves_between_torch_and_fused(torch_cls, fused_cls, kw, direction):
    src_cls, dst_cls = (
        (torch_cls, fused_cls) if direction == "torch_to_fused" else (fused_cls, torch_cls)
    )
    straight = _model()
    opt = src_cls(_groups(straight), **kw)
    _train(straight, opt, 5, seed=1)
    sd = _roundtrip(opt.state_dict())
    resumed = copy.deepcopy(straight)
    _train(straight, opt, 5, seed=2)  # continue in the same optimizer

    opt2 = dst_cls(_groups(resumed), **kw)
    opt2.load_state_dict(sd)
    _train(resumed, opt2, 5, seed=2)  # continue in the other implementation
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert set(opt.state_dict()["state"][0]) == set(opt2.state_dict()["state"][0])


def test_state_dict_keys_match_torch():
    for torch_cls, fused_cls, kw in PAIRS:
        a, b = _model(), _model()
        ta, fb = torch_cls(_groups(a), **kw), fused_cls(_groups(b), **kw)
        _train(a, ta, 2, 0)
        _train(b, fb, 2, 0)
        sa, sb = ta.state_dict(), fb.state_dict()
        assert sa["state"].keys() == sb["state"].keys()
        for k in sa["state"]:
            assert sa["state"][k].keys() == sb["state"][k].keys()
            for key, value in sa["state"][k].items():
                assert (
                    sb["state"][k][key].shape == value.shape
                    and sb["state"][k][key].dtype == value.dtype
                )
        assert [set(g) for g in sa["param_groups"]] == [set(g) for g in sb["param_groups"]]


def test_fp32_states_of_bf16_params_survive_a_round_trip():
    """torch casts loaded states to the param dtype; fused optimizers keep their float32 states."""
    p = torch.nn.Parameter(torch.randn(50).bfloat16())
    opt = fastopt.FusedAdamW([p], lr=1e-2)
    for _ in range(3):
        p.grad = torch.randn(50).bfloat16()
        opt.step()
    sd = _roundtrip(opt.state_dict())
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = fastopt.FusedAdamW([q], lr=1e-2)
    opt2.load_state_dict(sd)
    for key in ("exp_avg", "exp_avg_sq"):
        assert opt2.state[q][key].dtype == torch.float32
        assert torch.equal(opt2.state[q][key], opt.state[p][key])
    grad = torch.randn(50).bfloat16()
    p.grad, q.grad = grad.clone(), grad.clone()
    opt.step()
    opt2.step()
    assert torch.equal(p, q)


def test_lars_state_dict_round_trip():
    p = torch.nn.Parameter(torch.randn(20))
    opt = fastopt.FusedLARS([p], lr=0.1, momentum=0.9, eps=1e-6)
    for _ in range(3):
        p.grad = torch.randn(20)
        opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = fastopt.FusedLARS([q], lr=0.1, momentum=0.9, eps=1e-6)
    opt2.load_state_dict(_roundtrip(opt.state_dict()))
    for _ in range(2):
        grad = torch.randn(20)
        p.grad, q.grad = grad.clone(), grad.clone()
        opt.step()
        opt2.step()
    assert torch.equal(p, q)


def test_step_counts_are_torch_style_scalars():
    p = torch.nn.Parameter(torch.randn(4))
    opt = fastopt.FusedAdam([p])
    for _ in range(3):
        p.grad = torch.randn(4)
        opt.step()
    step = opt.state_dict()["state"][0]["step"]
    assert isinstance(step, torch.Tensor) and step.dim() == 0 and step.dtype == torch.float32
    assert step.item() == 3.0


def test_deepcopy_and_pickle():
    p = torch.nn.Parameter(torch.randn(4))
    opt = fastopt.FusedLARS([p], lr=0.1, momentum=0.9, eps=1e-5, state_dtype="param")
    p.grad = torch.randn(4)
    opt.step()
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.eps == 1e-5 and clone.state_dtype == "param"
        q = clone.param_groups[0]["params"][0]
        q.grad = torch.randn(4)
        clone.step()  # builds its own table


# ---- state dicts of every vintage -------------------------------------------------------------

OLD_KEYS = {
    # keys torch added after 1.x: its __setstate__ fills them in when a state dict lacks them
    "adam": (
        "maximize",
        "foreach",
        "capturable",
        "differentiable",
        "fused",
        "decoupled_weight_decay",
    ),
    "sgd": ("maximize", "foreach", "differentiable", "fused", "nesterov"),
}


@pytest.mark.parametrize(
    "fused_cls,torch_cls,kw,old",
    [
        (fastopt.FusedAdam, torch.optim.Adam, dict(lr=0.1), "adam"),
        (fastopt.FusedAdamW, torch.optim.AdamW, dict(lr=0.1), "adam"),
        (fastopt.FusedSGD, torch.optim.SGD, dict(lr=0.1, momentum=0.9), "sgd"),
    ],
)
def test_state_dict_from_an_older_torch_loads_and_steps(fused_cls, torch_cls, kw, old):
    torch.manual_seed(0)
    src = torch.nn.Parameter(torch.randn(6))
    saver = torch_cls([src], **kw)
    src.grad = torch.randn(6)
    saver.step()
    sd = copy.deepcopy(saver.state_dict())
    for group in sd["param_groups"]:
        for key in OLD_KEYS[old]:
            group.pop(key, None)
    p, q = (torch.nn.Parameter(src.detach().clone()) for _ in range(2))
    fused, ref = fused_cls([p], **kw), torch_cls([q], **kw)
    fused.load_state_dict(copy.deepcopy(sd))
    ref.load_state_dict(copy.deepcopy(sd))
    for key in OLD_KEYS[old]:
        assert fused.param_groups[0][key] == ref.param_groups[0][key], key
    for _ in range(3):
        g = torch.randn(6)
        p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
    torch.testing.assert_close(p, q)


def test_adam_state_dict_loads_into_adamw_as_adamw():
    """torch's AdamW forces decoupled_weight_decay=True on load; so does FusedAdamW."""
    torch.manual_seed(0)
    src = torch.nn.Parameter(torch.randn(8))
    saver = torch.optim.Adam([src], lr=0.1, weight_decay=0.1)
    src.grad = torch.randn(8)
    saver.step()
    sd = saver.state_dict()
    assert sd["param_groups"][0]["decoupled_weight_decay"] is False
    p, q = (torch.nn.Parameter(src.detach().clone()) for _ in range(2))
    fused = fastopt.FusedAdamW([p], lr=0.1, weight_decay=0.1)
    ref = torch.optim.AdamW([q], lr=0.1, weight_decay=0.1)
    fused.load_state_dict(copy.deepcopy(sd))
    ref.load_state_dict(copy.deepcopy(sd))
    assert fused.param_groups[0]["decoupled_weight_decay"] is True
    for _ in range(3):
        g = torch.randn(8)
        p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
    torch.testing.assert_close(p, q)


def test_load_state_dict_keeps_state_dtype_param():
    p = torch.nn.Parameter(torch.randn(16, dtype=torch.bfloat16))
    opt = fastopt.FusedAdamW([p], state_dtype="param")
    p.grad = torch.randn(16, dtype=torch.bfloat16)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    opt.load_state_dict(sd)
    assert opt.state_dtype == "param"
    opt.step()
    assert opt.state[p]["exp_avg"].dtype == torch.bfloat16
    assert opt.state[p]["exp_avg_sq"].dtype == torch.bfloat16


def test_load_state_dict_keeps_lars_eps():
    p = torch.nn.Parameter(torch.randn(4))
    opt = fastopt.FusedLARS([p], lr=0.1, momentum=0.9, eps=1e-3)
    p.grad = torch.randn(4)
    opt.step()
    opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert opt.eps == 1e-3


def test_lars_state_dict_without_group_eps_gets_the_optimizers():
    """eps became a group key: a state dict saved before (groups without it) still loads."""
    p = torch.nn.Parameter(torch.randn(4))
    opt = fastopt.FusedLARS([p], lr=0.1, momentum=0.9, eps=1e-3)
    p.grad = torch.randn(4)
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    del sd["param_groups"][0]["eps"]
    fresh = fastopt.FusedLARS([p], lr=0.1, momentum=0.9, eps=1e-3)
    fresh.load_state_dict(sd)
    assert fresh.param_groups[0]["eps"] == 1e-3
    fresh.step()


def test_sgd_without_momentum_keeps_no_state_like_torch():
    p, q = torch.nn.Parameter(torch.randn(4)), torch.nn.Parameter(torch.randn(4))
    fused, ref = fastopt.FusedSGD([p], lr=0.1), torch.optim.SGD([q], lr=0.1)
    p.grad, q.grad = torch.randn(4), torch.randn(4)
    fused.step()
    ref.step()
    assert fused.state_dict()["state"] == ref.state_dict()["state"] == {}
