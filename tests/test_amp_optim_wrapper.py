"""AmpOptimWrapper on CPU: float16 loss scaling against torch's GradScaler, bfloat16 without."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from fastopt.logging import MessageHub
from fastopt.registry import OPTIM_WRAPPERS
from fastopt.wrapper import AmpOptimWrapper

BAD_STEPS = {2, 3, 9, 16}  # iterations whose batch holds an inf
DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    ),
]


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> MessageHub:
    return MessageHub.get_instance(f"test_amp_optim_wrapper::{request.node.name}")


def _model(seed: int = 0, device: str = "cpu") -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).to(device)


def _batches(n: int, bad: set[int] = frozenset(), device: str = "cpu") -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(5, 8, generator=g) for _ in range(n)]
    for i in bad:
        batches[i][1, 2] = math.inf
    return [x.to(device) for x in batches]


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).float().pow(2).mean()


def _sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _torch_reference(batches, scaler_kwargs, static, clip, acc, device="cpu"):
    """torch's documented AMP loop (scale, backward, unscale_, clip, step, update)."""
    model = _model(device=device)
    opt = _sgd(model)
    scaler = torch.amp.GradScaler(device, **scaler_kwargs)
    params, scales, norms = [], [], []
    for i, x in enumerate(batches):
        with torch.autocast(device, dtype=torch.float16):
            loss = _loss(model, x) / acc
        scaler.scale(loss).backward()
        if (i + 1) % acc == 0 or i + 1 == len(batches):
            if clip:
                scaler.unscale_(opt)
                norms.append(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item())
            scaler.step(opt)
            scaler.update(static)
            opt.zero_grad()
            scales.append(scaler.get_scale())
        params.append([p.detach().clone() for p in model.parameters()])
    return params, scales, norms


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("acc", [1, 2])
@pytest.mark.parametrize("clip", [True, False])
def test_fp16_dynamic_scaling_equals_torch_grad_scaler(hub, acc, clip, device):
    batches = _batches(20, BAD_STEPS, device)
    scaler_kwargs = {"init_scale": 2.0**10, "growth_interval": 3}
    ref_params, ref_scales, ref_norms = _torch_reference(
        batches, scaler_kwargs, None, clip, acc, device
    )

    model = _model(device=device)
    wrapper = AmpOptimWrapper(
        optimizer=_sgd(model),
        loss_scale=dict(scaler_kwargs),
        dtype="float16",
        accumulative_counts=acc,
        clip_grad={"max_norm": 1.0} if clip else None,
    )
    assert wrapper.device_type == device
    wrapper.initialize_count_status(model, 0, len(batches))
    scales, skipped = [], []
    for i, x in enumerate(batches):
        before = [p.detach().clone() for p in model.parameters()]
        with wrapper.optim_context(model):
            loss = _loss(model, x)
        wrapper.update_params(loss)
        if wrapper.should_update():
            scales.append(wrapper.loss_scaler.get_scale())
            if all(torch.equal(b, p) for b, p in zip(before, model.parameters())):
                skipped.append(i)
        for p, q in zip(model.parameters(), ref_params[i]):
            assert torch.equal(p, q), f"iteration {i}"

    assert scales == ref_scales
    if acc == 1:
        assert skipped == sorted(BAD_STEPS)
        # growth every 3 clean steps, halving on every bad one
        expected, scale, clean = [], 2.0**10, 0
        for i in range(20):
            if i in BAD_STEPS:
                scale, clean = scale / 2, 0
            else:
                clean += 1
                if clean == 3:
                    scale, clean = scale * 2, 0
            expected.append(scale)
        assert scales == expected
    else:
        assert skipped == sorted({i | 1 for i in BAD_STEPS})  # the window's last iteration
    if clip:
        logged = hub.get_scalar("train/grad_norm").data[0].tolist()
        assert len(logged) == len(ref_norms)
        assert all(_same(a, b) for a, b in zip(logged, ref_norms))
        assert sum(not math.isfinite(n) for n in logged) == len(skipped)
    else:
        assert "train/grad_norm" not in hub.log_scalars


@pytest.mark.parametrize("loss_scale", [512.0, 512])
def test_static_scale_is_reset_after_every_step(hub, loss_scale):
    batches = _batches(6, {1, 4})
    ref_params, ref_scales, _ = _torch_reference(batches, {"init_scale": 512.0}, 512.0, True, 1)
    model = _model()
    wrapper = AmpOptimWrapper(
        optimizer=_sgd(model), loss_scale=loss_scale, dtype="float16", clip_grad={"max_norm": 1.0}
    )
    for i, x in enumerate(batches):
        with wrapper.optim_context(model):
            loss = _loss(model, x)
        wrapper.update_params(loss)
        assert wrapper.loss_scaler.get_scale() == ref_scales[i] == 512.0
        for p, q in zip(model.parameters(), ref_params[i]):
            assert torch.equal(p, q)
    assert wrapper.state_dict()["loss_scaler"]["scale"] == 512.0


def test_defaults_match_mmengine(hub):
    wrapper = AmpOptimWrapper(optimizer=_sgd(_model()), dtype="float16")
    assert wrapper.uses_loss_scaling
    assert wrapper.device_type == "cpu"
    assert wrapper.cast_dtype is torch.float16
    assert wrapper.state_dict()["loss_scaler"] == {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 0,
    }
    assert repr(wrapper).startswith("Type: AmpOptimWrapper\n_accumulative_counts: 1\n")


def test_fp16_state_dict_round_trip_resumes_exactly(hub, tmp_path):
    batches = _batches(12, {2, 3})
    kwargs = {"loss_scale": {"init_scale": 256.0, "growth_interval": 2}, "dtype": "float16"}
    model = _model()
    wrapper = AmpOptimWrapper(optimizer=_sgd(model), clip_grad={"max_norm": 1.0}, **kwargs)

    def train(m, w, xs):
        for x in xs:
            with w.optim_context(m):
                loss = _loss(m, x)
            w.update_params(loss)

    train(model, wrapper, batches[:5])
    state = wrapper.state_dict()
    assert state["loss_scaler"] == {
        "scale": 128.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2,
        "_growth_tracker": 1,
    }
    torch.save({"model": model.state_dict(), "optim": state}, tmp_path / "ckpt.pth")
    ckpt = torch.load(tmp_path / "ckpt.pth", weights_only=True)

    resumed_model = _model(seed=9)
    resumed_model.load_state_dict(ckpt["model"])
    resumed = AmpOptimWrapper(optimizer=_sgd(resumed_model), clip_grad={"max_norm": 1.0}, **kwargs)
    resumed.load_state_dict(ckpt["optim"])
    assert "loss_scaler" in ckpt["optim"]  # the caller's dict is not modified
    assert resumed.loss_scaler.state_dict() == wrapper.loss_scaler.state_dict()

    train(model, wrapper, batches[5:])
    train(resumed_model, resumed, batches[5:])
    assert resumed.loss_scaler.get_scale() == wrapper.loss_scaler.get_scale()
    for p, q in zip(model.parameters(), resumed_model.parameters()):
        assert torch.equal(p, q)


def test_fp16_autocast_in_optim_context(hub):
    model = _model()
    wrapper = AmpOptimWrapper(optimizer=_sgd(model), dtype="float16")
    with wrapper.optim_context(model):
        assert torch.is_autocast_enabled("cpu")
        assert model(torch.randn(2, 8)).dtype is torch.float16
    assert not torch.is_autocast_enabled("cpu")


# ------------------------------------------------------------------------------ bfloat16
@pytest.mark.parametrize("dtype", ["bfloat16", torch.bfloat16, None])
def test_bf16_uses_no_loss_scaler(hub, dtype):
    """dtype None on CPU means autocast's CPU default, bfloat16."""
    batches = _batches(4)
    model, ref = _model(), _model()
    wrapper = AmpOptimWrapper(
        optimizer=_sgd(model), loss_scale=512.0, dtype=dtype, clip_grad={"max_norm": 1.0}
    )
    assert not wrapper.uses_loss_scaling
    assert wrapper.autocast_dtype is torch.bfloat16
    probe = torch.tensor(3.0)
    assert wrapper.loss_scaler.scale(probe) is probe  # scaling is the identity

    ref_opt = _sgd(ref)
    for x in batches:
        with wrapper.optim_context(model):
            assert model(x).dtype is torch.bfloat16
            loss = _loss(model, x)
        wrapper.update_params(loss)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref_loss = _loss(ref, x)
        ref_loss.backward()
        torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
        ref_opt.step()
        ref_opt.zero_grad()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert "loss_scaler" not in wrapper.state_dict()


def test_state_dicts_load_across_fp16_and_bf16(hub):
    model = _model()
    fp16 = AmpOptimWrapper(optimizer=_sgd(model), dtype="float16", loss_scale={"init_scale": 8.0})
    bf16 = AmpOptimWrapper(optimizer=_sgd(model), dtype="bfloat16")
    fp16_state = fp16.state_dict()
    bf16.load_state_dict(fp16_state)  # the loss_scaler entry is ignored
    assert not bf16.uses_loss_scaling and "loss_scaler" in fp16_state

    fp16_other = AmpOptimWrapper(
        optimizer=_sgd(model), dtype="float16", loss_scale={"init_scale": 4.0}
    )
    fp16_other.load_state_dict(bf16.state_dict())  # no loss_scaler: the scaler is kept
    assert fp16_other.loss_scaler.get_scale() == 4.0
    fp16_other.load_state_dict(fp16_state)
    assert fp16_other.loss_scaler.get_scale() == 8.0


@pytest.mark.parametrize("dtype", ["float32", "float64", torch.float32])
def test_full_precision_dtypes_run_without_autocast_but_with_the_scaler(hub, dtype):
    model = _model()
    wrapper = AmpOptimWrapper(optimizer=_sgd(model), dtype=dtype)
    assert wrapper.uses_loss_scaling
    with wrapper.optim_context(model):
        assert not torch.is_autocast_enabled("cpu")
        assert model(torch.randn(2, 8)).dtype is torch.float32


# --------------------------------------------------------------------- arguments, configs
@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"loss_scale": "dyn"}, ValueError, "loss_scale must be \"dynamic\".*'dyn'"),
        ({"loss_scale": 0}, ValueError, "loss_scale must be a positive finite number, but got 0"),
        ({"loss_scale": -8.0}, ValueError, "positive finite number, but got -8.0"),
        ({"loss_scale": math.inf}, ValueError, "positive finite number, but got inf"),
        ({"loss_scale": math.nan}, ValueError, "positive finite number, but got nan"),
        ({"loss_scale": True}, TypeError, "loss_scale must be.*bool: True"),
        ({"loss_scale": [512.0]}, TypeError, r"loss_scale must be.*list: \[512.0\]"),
        ({"loss_scale": {"init_scal": 2.0}}, TypeError, "loss_scale=.*init_scal.*GradScaler"),
        ({"dtype": "fp16"}, ValueError, "dtype should be None or any of .*'fp16'"),
        ({"dtype": torch.int32}, ValueError, "dtype should be None or any of .*torch.int32"),
        ({"dtype": 16}, ValueError, "dtype should be None or any of .*16"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(hub, kwargs, error, message):
    with pytest.raises(error, match=message):
        AmpOptimWrapper(optimizer=_sgd(_model()), **kwargs)


def test_int_loss_scale_is_a_static_scale(hub):
    wrapper = AmpOptimWrapper(optimizer=_sgd(_model()), loss_scale=512, dtype="float16")
    assert wrapper.loss_scaler.get_scale() == 512.0
    assert wrapper._scale_update_param == 512.0


def test_config_dicts_are_not_modified(hub):
    model = _model()
    loss_scale = {"init_scale": 16.0, "growth_interval": 10}
    clip_grad = {"type": "norm", "max_norm": 2}
    cfg = {
        "type": "AmpOptimWrapper",
        "optimizer": _sgd(model),
        "loss_scale": loss_scale,
        "clip_grad": clip_grad,
        "dtype": "float16",
    }
    snapshot = copy.deepcopy({k: v for k, v in cfg.items() if k != "optimizer"})
    wrapper = OPTIM_WRAPPERS.build(cfg)
    assert isinstance(wrapper, AmpOptimWrapper)
    assert {k: v for k, v in cfg.items() if k != "optimizer"} == snapshot
    assert wrapper.loss_scaler.state_dict()["growth_interval"] == 10


# ------------------------------------------------ the private torch API of the fused step
def _fused_run(loss_scale, batches):
    """Scales after each step of FusedSGD under AmpOptimWrapper: the fused unscale/inf-check
    step with the scale updated through the private API."""
    import fastopt

    model = _model()
    wrapper = AmpOptimWrapper(
        optimizer=fastopt.FusedSGD(model.parameters(), lr=0.05, momentum=0.9),
        loss_scale=loss_scale,
        dtype="float16",
    )
    assert wrapper._use_fused_pipeline({})  # the path under test
    wrapper.initialize_count_status(model, 0, len(batches))
    scales, trackers = [], []
    for x in batches:
        with wrapper.optim_context(model):
            loss = _loss(model, x)
        wrapper.update_params(loss)
        scales.append(wrapper.loss_scaler.get_scale())
        trackers.append(wrapper.loss_scaler.state_dict()["_growth_tracker"])
    return wrapper, scales, trackers


def test_fused_amp_step_updates_the_scale_as_grad_scaler_does(hub):
    """The in-place scale update fed the fused step's inf flag gives GradScaler.update's
    scale and growth tracker after every step, and the state dict stays GradScaler's."""
    batches = _batches(20, BAD_STEPS)
    kwargs = {"init_scale": 2.0**10, "growth_interval": 3, "growth_factor": 4.0}
    wrapper, scales, trackers = _fused_run(dict(kwargs), batches)
    _, ref_scales, _ = _torch_reference(batches, kwargs, None, False, 1)
    assert scales == ref_scales
    expected, scale, clean = [], 2.0**10, 0
    tracked = []
    for i in range(20):
        if i in BAD_STEPS:
            scale, clean = scale * 0.5, 0
        else:
            clean += 1
            if clean == 3:
                scale, clean = scale * 4.0, 0
        expected.append(scale)
        tracked.append(clean)
    assert scales == expected
    assert trackers == tracked
    state = wrapper.state_dict()["loss_scaler"]
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(state)  # GradScaler-compatible checkpoint format
    assert restored.get_scale() == scales[-1]
    assert restored.state_dict() == state

    _, static, _ = _fused_run(512.0, batches)  # static scale: reset through update(new_scale)
    assert static == [512.0] * 20


def test_the_private_torch_api_of_the_fused_amp_step_exists():
    """Fails loudly when a torch renames what the fused step reads: GradScaler's scale and
    growth tracker tensors and torch._amp_update_scale_ (whose signature is checked by
    calling it)."""
    from fastopt.wrapper.amp_optim_wrapper import (
        PRIVATE_SCALER_ATTRIBUTES,
        PRIVATE_TORCH_FUNCTIONS,
        scaler_state_tensors,
    )

    scaler = torch.amp.GradScaler("cpu", init_scale=8.0, growth_interval=1)
    assert scaler_state_tensors(scaler) == (None, None)  # before the first scale()
    scaler.scale(torch.ones(()))
    for name in PRIVATE_SCALER_ATTRIBUTES:
        assert isinstance(getattr(scaler, name), torch.Tensor), name
    for name in PRIVATE_TORCH_FUNCTIONS:
        assert callable(getattr(torch, name)), name
    scale, tracker = scaler_state_tensors(scaler)
    assert scale is scaler._scale and tracker is scaler._growth_tracker
    torch._amp_update_scale_(scale, tracker, torch.zeros(()), 2.0, 0.5, 1)
    assert scaler.get_scale() == 16.0

    # a torch without them: a RuntimeError that names what is missing, not a silent step
    class RenamedScaler(torch.amp.GradScaler):
        def __getattribute__(self, name):
            if name == "_growth_tracker":
                raise AttributeError(name)
            return super().__getattribute__(name)

    with pytest.raises(RuntimeError, match=r"has no GradScaler\._growth_tracker"):
        scaler_state_tensors(RenamedScaler("cpu"))
