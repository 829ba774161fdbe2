"""Bad input gets a clear error that names what is at fault."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import fastopt_subprocess_env

import fastopt
from fastopt.catalog import CATALOG


@pytest.mark.parametrize(
    "cls,kw,match",
    [
        (fastopt.FusedSGD, dict(lr=-1.0), "Invalid learning rate: -1.0"),
        (fastopt.FusedSGD, dict(lr=0.1, momentum=-0.5), "Invalid momentum value"),
        (fastopt.FusedSGD, dict(lr=0.1, weight_decay=-1), "Invalid weight_decay value"),
        (
            fastopt.FusedSGD,
            dict(lr=0.1, nesterov=True),
            "Nesterov momentum requires a momentum and zero dampening",
        ),
        (fastopt.FusedSGD, dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
        (fastopt.FusedAdam, dict(lr=-1e-3), "Invalid learning rate"),
        (fastopt.FusedAdam, dict(eps=-1.0), "Invalid epsilon value"),
        (fastopt.FusedAdam, dict(betas=(1.0, 0.999)), "Invalid beta parameter at index 0"),
        (fastopt.FusedAdamW, dict(betas=(0.9, -0.1)), "Invalid beta parameter at index 1"),
        (fastopt.FusedAdamW, dict(weight_decay=-0.1), "Invalid weight_decay value"),
        (fastopt.FusedLARS, dict(lr=0.1, eta=-1.0), "Invalid LARS coefficient"),
        (fastopt.FusedLARS, dict(lr=0.1, nesterov=True), "Nesterov"),
        (fastopt.FusedAdamW, dict(state_dtype=torch.float16), "state_dtype must be"),
        # torch.optim's messages for Adagrad and RMSprop
        (fastopt.FusedAdagrad, dict(lr_decay=-0.1), "Invalid lr_decay value: -0.1"),
        (fastopt.FusedAdagrad, dict(initial_accumulator_value=-1), "initial_accumulator_value"),
        (fastopt.FusedAdagrad, dict(eps=-1e-3), "Invalid epsilon value"),
        (fastopt.FusedRMSprop, dict(alpha=-0.5), "Invalid alpha value: -0.5"),
        (fastopt.FusedRMSprop, dict(momentum=-0.5), "Invalid momentum value"),
        (fastopt.FusedLion, dict(betas=(0.9, 1.5)), "Invalid beta parameter at index 1"),
        (fastopt.FusedLion, dict(weight_decay=-1.0), "Invalid weight_decay value"),
        (fastopt.FusedAdan, dict(betas=(0.9, 0.9)), "betas must be a triple"),
        (fastopt.FusedAdan, dict(betas=(0.9, 0.9, 1.5)), "Invalid beta parameter at index 2"),
        (fastopt.FusedAdan, dict(caution=True), "caution=True"),
        (fastopt.FusedLAMB, dict(betas=(1.5, 0.9)), "Invalid beta parameter at index 0"),
        (fastopt.FusedLAMB, dict(max_grad_norm=-1.0), "Invalid max_grad_norm"),
    ],
)
def test_invalid_hyperparameters(cls, kw, match):
    with pytest.raises(ValueError, match=match):
        cls([torch.nn.Parameter(torch.randn(2))], **kw)


@pytest.mark.parametrize("name", [o.name for o in CATALOG])
def test_non_float_param_names_group_and_index(name):
    good = torch.nn.Parameter(torch.randn(3))
    bad = torch.randn(3, dtype=torch.float64, requires_grad=True)
    opt = getattr(fastopt, name)(
        [{"params": [good]}, {"params": [good.detach().clone().requires_grad_(), bad]}], lr=0.01
    )
    good.grad = torch.randn(3)
    bad.grad = torch.randn(3, dtype=torch.float64)
    before = good.detach().clone()
    with pytest.raises(
        TypeError, match=rf"{name}: param group 1, param 1 \(shape \(3,\), dtype torch.float64"
    ):
        opt.step()
    assert torch.equal(good.detach(), before)
    assert set(opt.state.get(good, {})) <= {"sum", "step"}  # only Adagrad's eager states


@pytest.mark.parametrize("name", ["FusedLAMB", "FusedAdan"])
def test_refused_step_does_not_count_the_group_step(name):
    """LAMB and Adan count their step per group (timm's layout): a refused step leaves it."""
    p = torch.nn.Parameter(torch.randn(3))
    opt = getattr(fastopt, name)([p], lr=0.01)
    p.grad = torch.randn(3)
    opt.step()
    assert opt.param_groups[0]["step"] == 1
    opt.param_groups[0]["lr"] = "fast"
    with pytest.raises(ValueError, match=f"{name}: param group 0: 'lr' is not a number"):
        opt.step()
    assert opt.param_groups[0]["step"] == 1


def test_sparse_grad_is_rejected_with_its_position():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = fastopt.FusedSGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(
        RuntimeError, match="param group 0, param 0 .*sparse gradients are not supported"
    ):
        opt.step()


def test_sparse_grad_appearing_later_is_rejected():
    p = torch.nn.Parameter(torch.randn(4, 2))
    opt = fastopt.FusedSGD([p], lr=0.1)
    p.grad = torch.randn(4, 2)
    opt.step()
    p.grad = torch.randn(4, 2).to_sparse()
    with pytest.raises(RuntimeError, match="sparse gradients are not supported"):
        opt.step()


def test_params_on_different_devices():
    a = torch.nn.Parameter(torch.randn(3))
    b = torch.nn.Parameter(torch.randn(3, device="meta"))
    opt = fastopt.FusedSGD([a, b], lr=0.1)
    a.grad = torch.randn(3)
    with pytest.raises(
        RuntimeError, match="param group 0, param 1 .*all params must be on one device"
    ):
        opt.step()


def test_failed_step_leaves_params_untouched():
    a = torch.nn.Parameter(torch.randn(3))
    bad = torch.randn(3, dtype=torch.float64, requires_grad=True)
    before = a.detach().clone()
    opt = fastopt.FusedSGD([a, bad], lr=0.1)
    a.grad, bad.grad = torch.randn(3), torch.randn(3, dtype=torch.float64)
    with pytest.raises(TypeError):
        opt.step()
    assert torch.equal(a.detach(), before)


def test_missing_extension_gives_a_clear_error(tmp_path):
    script = (
        "import sys; sys.modules['fastopt._C'] = None\n"
        "import torch, fastopt, fastopt._ext\n"
        "print('import ok')\n"
        "info = fastopt._ext.build_info(); assert info['backends'] == [], info\n"
        "opt = fastopt.FusedAdamW([torch.nn.Parameter(torch.randn(2))])\n"
        "opt.param_groups[0]['params'][0].grad = torch.randn(2)\n"
        "opt.step()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=fastopt_subprocess_env(),
    )
    assert out.returncode != 0
    assert "import ok" in out.stdout
    assert "fastopt._C is not available" in out.stderr and "pip install" in out.stderr


@pytest.mark.parametrize(
    "cls,kw,error,match",
    [
        # torch's checks and messages
        (
            fastopt.FusedAdam,
            dict(lr=torch.tensor([0.1, 0.2])),
            ValueError,
            "Tensor lr must be 1-element",
        ),
        (
            fastopt.FusedSGD,
            dict(lr=torch.tensor([0.1, 0.2])),
            ValueError,
            "Tensor lr must be 1-element",
        ),
        (
            fastopt.FusedAdam,
            dict(betas=(0.9, torch.tensor(0.99))),
            ValueError,
            "betas must be either both floats or both Tensors",
        ),
        (
            fastopt.FusedAdamW,
            dict(betas=(torch.tensor([0.9, 0.8]), torch.tensor(0.99))),
            ValueError,
            r"Tensor betas\[0\] must be 1-element",
        ),
        # where torch fails obscurely or not at all
        (
            fastopt.FusedAdam,
            dict(lr="abc"),
            TypeError,
            "Invalid learning rate: 'abc' is not a number",
        ),
        (
            fastopt.FusedSGD,
            dict(lr="abc"),
            TypeError,
            "Invalid learning rate: 'abc' is not a number",
        ),
        (fastopt.FusedSGD, dict(lr=0.1, momentum="0.9"), TypeError, "Invalid momentum"),
        (fastopt.FusedAdam, dict(eps=None), TypeError, "Invalid epsilon value: None"),
        (fastopt.FusedAdam, dict(betas=(0.9, 0.99, 0.5)), ValueError, r"betas must be a pair"),
        (fastopt.FusedAdam, dict(betas=0.9), ValueError, r"betas must be a pair"),
        (fastopt.FusedLARS, dict(lr=0.1, eta="x"), TypeError, "Invalid LARS coefficient"),
    ],
)
def test_hyperparameter_types(cls, kw, error, match):
    with pytest.raises(error, match=match):
        cls([torch.nn.Parameter(torch.randn(2))], **kw)


def test_tensor_lr_and_betas_step_like_torch():
    p, q = torch.nn.Parameter(torch.randn(5)), torch.nn.Parameter(torch.randn(5))
    q.data.copy_(p.data)
    kw = dict(lr=torch.tensor(0.1), betas=(torch.tensor(0.8), torch.tensor(0.9)))
    fused, ref = fastopt.FusedAdam([p], **kw), torch.optim.Adam([q], **kw)
    for _ in range(3):
        g = torch.randn(5)
        p.grad, q.grad = g.clone(), g.clone()
        fused.step()
        ref.step()
    torch.testing.assert_close(p, q)


def test_group_hyperparameter_edited_to_garbage_names_group_and_key():
    p = torch.nn.Parameter(torch.randn(3))
    opt = fastopt.FusedAdam([{"params": [torch.nn.Parameter(torch.randn(2))]}, {"params": [p]}])
    p.grad = torch.randn(3)
    opt.param_groups[1]["eps"] = "tiny"
    with pytest.raises(ValueError, match="FusedAdam: param group 1: 'eps' is not a number"):
        opt.step()
    assert not opt.state
    del opt.param_groups[1]["betas"]
    opt.param_groups[1]["eps"] = 1e-8
    with pytest.raises(ValueError, match="param group 1 has no 'betas'"):
        opt.step()
