"""OptimWrapper / OptimWrapperDict on the torch fallback path, against MMEngine's semantics.

Golden accumulation traces: mmengine-semantics.md §3.1 (acc=3, max=10, loss=w, SGD lr=0.1).
"""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
import torch.distributed as dist
from torch import nn

from fastopt.logging import MessageHub
from fastopt.registry import OPTIM_WRAPPERS
from fastopt.wrapper import AmpOptimWrapper, OptimWrapper, OptimWrapperDict


@pytest.fixture
def hub(request: pytest.FixtureRequest) -> MessageHub:
    """A fresh current hub, so a wrapper built in the test logs into it."""
    return MessageHub.get_instance(f"test_optim_wrapper::{request.node.name}")


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))


def _batches(n: int, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(4, 6, generator=g) * 3 for _ in range(n)]


def _loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x).pow(2).mean()


# ------------------------------------------------------------------------ accumulation
def _accumulation_trace(init: tuple[int, int] | None, start: int = 0) -> list[tuple]:
    """Per iteration: (iter, should_sync before, loss divisor, stepped, w after)."""
    w = nn.Parameter(torch.tensor(1.0))
    wrapper = OptimWrapper(torch.optim.SGD([w], lr=0.1), accumulative_counts=3)
    if init is not None:
        wrapper.initialize_count_status(nn.Linear(1, 1), *init)
    trace = []
    for i in range(start, 10):
        sync = wrapper.should_sync()
        before = w.item()
        divisor = 1.0 / wrapper.scale_loss(torch.tensor(1.0)).item()
        wrapper.update_params(w * 1.0)
        stepped = w.item() != before
        assert stepped == (w.grad is None)  # zero_grad (set_to_none) right after each step
        trace.append((i, sync, divisor, stepped, w.item()))
    return trace


def test_accumulation_golden_trace_with_initialize_count_status(hub):
    trace = _accumulation_trace((0, 10))
    assert [i for i, *_, stepped, _ in trace if stepped] == [2, 5, 8, 9]
    assert [i for i, sync, *_ in trace if sync] == [2, 5, 8, 9]
    assert [d for *_, d, _, _ in trace] == pytest.approx([3.0] * 9 + [1.0])
    # every window averages its grads (d(w)/dw = 1): four steps of lr * 1
    assert trace[-1][-1] == pytest.approx(1.0 - 4 * 0.1)


def test_accumulation_golden_trace_without_initialize_count_status(hub):
    trace = _accumulation_trace(None)
    assert [i for i, *_, stepped, _ in trace if stepped] == [2, 5, 8]  # iter 9 never steps
    assert [d for *_, d, _, _ in trace] == pytest.approx([3.0] * 10)
    assert trace[-1][-1] == pytest.approx(1.0 - 3 * 0.1)


def test_accumulation_golden_trace_resumed_at_inner_count_4(hub, caplog):
    with caplog.at_level(logging.WARNING, logger="fastopt.wrapper"):
        trace = _accumulation_trace((4, 10), start=4)
    assert "Resumed iteration number is not divisible by `_accumulative_counts`" in caplog.text
    assert [i for i, *_, stepped, _ in trace if stepped] == [5, 8, 9]
    assert [d for *_, d, _, _ in trace] == pytest.approx([3.0] * 5 + [1.0])
    # first window has 2 iterations, each divided by 3
    assert trace[1][-1] == pytest.approx(1.0 - 0.1 * 2 / 3)
    assert trace[-1][-1] == pytest.approx(1.0 - 0.1 * 2 / 3 - 0.2)


def test_initialize_count_status_warns_about_batch_norm_only_when_accumulating(hub, caplog):
    bn_model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with caplog.at_level(logging.WARNING, logger="fastopt.wrapper"):
        OptimWrapper(torch.optim.SGD(bn_model.parameters(), lr=0.1)).initialize_count_status(
            bn_model, 0, 10
        )
        assert "BatchNorm" not in caplog.text
        wrapper = OptimWrapper(torch.optim.SGD(bn_model.parameters(), lr=0.1), 2)
        wrapper.initialize_count_status(bn_model, 0, 10)
    assert "Gradient accumulative may slightly decrease performance" in caplog.text
    assert "Resumed" not in caplog.text
    assert wrapper.inner_count == 0


def test_accumulated_update_equals_one_large_batch_step(hub):
    """Averaging over the window: 2 accumulated halves == one step on the whole batch."""
    model, ref = _model(), _model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.5), accumulative_counts=2)
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
    for x in _batches(3):
        for half in x.chunk(2):
            wrapper.update_params(_loss(model, half))
        _loss(ref, x).backward()
        ref_opt.step()
        ref_opt.zero_grad()
    for p, q in zip(model.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_update_params_passes_step_and_zero_kwargs(hub):
    model = _model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        return torch.tensor(0.0)

    wrapper.update_params(
        _loss(model, _batches(1)[0]),
        step_kwargs={"closure": closure},
        zero_kwargs={"set_to_none": False},
    )
    assert calls == [1]
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    wrapper.update_params(_loss(model, _batches(1)[0]))
    assert all(p.grad is None for p in model.parameters())
    assert wrapper.inner_count == 2


def test_bad_arguments(hub):
    params = _model().parameters()
    opt = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(
        AssertionError, match="_accumulative_counts at least greater than or equal to 1"
    ):
        OptimWrapper(opt, accumulative_counts=0)
    with pytest.raises(TypeError, match="accumulative_counts must be an int, but got 2.5"):
        OptimWrapper(opt, accumulative_counts=2.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer must be a `torch.optim.Optimizer`"):
        OptimWrapper(object())  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- clipping
@pytest.mark.parametrize("norm_type", [2, 2.0, 1, 3, float("inf"), "inf"])
def test_clip_by_norm_equals_torch_and_logs_the_pre_clip_norm(hub, norm_type):
    model, ref = _model(), _model()
    clip = {"type": "norm", "max_norm": 0.2, "norm_type": norm_type}
    wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), clip_grad=clip
    )
    assert wrapper.message_hub is hub
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9)
    ref_norms = []
    for x in _batches(4):
        wrapper.update_params(_loss(model, x))
        _loss(ref, x).backward()
        ref_norms.append(torch.nn.utils.clip_grad_norm_(ref.parameters(), 0.2, norm_type).item())
        ref_opt.step()
        ref_opt.zero_grad()
        for p, q in zip(model.parameters(), ref.parameters()):
            assert torch.equal(p, q)
    assert max(ref_norms) > 0.2  # clipping was active
    assert hub.get_scalar("train/grad_norm").data[0].tolist() == ref_norms
    assert clip == {"type": "norm", "max_norm": 0.2, "norm_type": norm_type}  # not mutated


def test_clip_by_value_equals_torch_and_logs_nothing(hub):
    model, ref = _model(), _model()
    clip = {"type": "value", "clip_value": 0.05}
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=0.01), clip_grad=clip)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=0.01)
    for x in _batches(3):
        wrapper.update_params(_loss(model, x))
        _loss(ref, x).backward()
        torch.nn.utils.clip_grad_value_(ref.parameters(), 0.05)
        ref_opt.step()
        ref_opt.zero_grad()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert hub.log_scalars == {}
    assert clip == {"type": "value", "clip_value": 0.05}
    assert wrapper.clip_grad_kwargs == {"clip_value": 0.05, "foreach": None}


def test_clip_skips_frozen_params_and_params_without_grad(hub):
    model, ref = _model(), _model()
    for m in (model, ref):
        m[0].bias.requires_grad_(False)
    extra = nn.Parameter(torch.ones(3))  # in the optimizer, but never gets a grad
    wrapper = OptimWrapper(
        torch.optim.SGD([*model.parameters(), extra], lr=0.1), clip_grad={"max_norm": 0.1}
    )
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    x = _batches(1)[0]
    wrapper.update_params(_loss(model, x))
    _loss(ref, x).backward()
    trainable = [p for p in ref.parameters() if p.requires_grad]
    ref_norm = torch.nn.utils.clip_grad_norm_(trainable, 0.1)
    ref_opt.step()
    for p, q in zip(model.parameters(), ref.parameters()):
        assert torch.equal(p, q)
    assert hub.get_scalar("train/grad_norm").current() == ref_norm.item()


def test_no_grad_norm_is_logged_without_clip_grad(hub):
    model = _model()
    OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)).update_params(
        _loss(model, _batches(1)[0])
    )
    assert "train/grad_norm" not in hub.log_scalars


def _nonfinite_step(error_if_nonfinite: bool) -> nn.Module:
    model = _model()
    wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1),
        clip_grad={"max_norm": 1.0, "error_if_nonfinite": error_if_nonfinite},
    )
    x = _batches(1)[0]
    x[0, 0] = math.inf
    wrapper.update_params(_loss(model, x))
    return model


def test_error_if_nonfinite(hub):
    with pytest.raises(RuntimeError, match="non-finite"):
        _nonfinite_step(error_if_nonfinite=True)
    model = _nonfinite_step(error_if_nonfinite=False)
    # no loss scaler: like MMEngine, the non-finite update is applied
    assert not math.isfinite(hub.get_scalar("train/grad_norm").current())
    assert not torch.isfinite(model[0].weight).all()


@pytest.mark.parametrize(
    ("clip_grad", "error", "message"),
    [
        ([1.0], AssertionError, "If `clip_grad` is not None, it should be a `dict`"),
        ({}, AssertionError, "If `clip_grad` is not None, it should be a `dict`"),
        ({"type": "foo", "max_norm": 1}, ValueError, 'should be "norm" or "value" but got foo'),
        ({"type": "norm"}, AssertionError, "should contain other arguments besides `type`"),
        ({"type": "value"}, AssertionError, "should contain other arguments besides `type`"),
        ({"norm_type": 2}, TypeError, "needs 'max_norm'"),
        ({"type": "value", "max_norm": 1}, TypeError, r"unexpected key\(s\) \['max_norm'\]"),
        ({"max_norm": 1, "clip_value": 1}, TypeError, r"unexpected key\(s\) \['clip_value'\]"),
        ({"max_norm": "1"}, TypeError, r"clip_grad\['max_norm'\] must be a number, but got '1'"),
        ({"max_norm": 1, "norm_type": "two"}, ValueError, "norm_type.*'two'"),
        ({"max_norm": 1, "norm_type": True}, ValueError, "norm_type.*True"),
        ({"max_norm": 1, "error_if_nonfinite": 1}, TypeError, "error_if_nonfinite.*bool"),
        ({"type": "value", "clip_value": None}, TypeError, "clip_value.*None"),
        ({"max_norm": 1, "foreach": "yes"}, TypeError, "foreach"),
    ],
)
def test_bad_clip_configs(hub, clip_grad, error, message):
    before = copy.deepcopy(clip_grad)
    with pytest.raises(error, match=message):
        OptimWrapper(torch.optim.SGD(_model().parameters(), lr=0.1), clip_grad=clip_grad)
    assert clip_grad == before


def test_built_from_a_config_without_touching_it(hub):
    model = _model()
    cfg = {
        "type": "OptimWrapper",
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
        "accumulative_counts": 2,
        "clip_grad": {"type": "norm", "max_norm": 35, "norm_type": 2},
    }
    wrapper = OPTIM_WRAPPERS.build(cfg)
    assert type(wrapper) is OptimWrapper
    assert cfg["clip_grad"] == {"type": "norm", "max_norm": 35, "norm_type": 2}
    assert wrapper.clip_grad_kwargs == {
        "max_norm": 35.0,
        "norm_type": 2.0,
        "error_if_nonfinite": False,
        "foreach": None,
    }
    assert OPTIM_WRAPPERS.get("AmpOptimWrapper") is AmpOptimWrapper
    assert OPTIM_WRAPPERS.get("OptimWrapperDict") is OptimWrapperDict


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_logging_grad_norm_does_not_sync_the_device(hub):
    model = _model().cuda()
    wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1, foreach=True), clip_grad={"max_norm": 0.2}
    )
    batches = [x.cuda() for x in _batches(3)]
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x in batches:
            wrapper.update_params(_loss(model, x))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    norms = hub.get_scalar("train/grad_norm").data[0]  # the read is where the sync happens
    assert len(norms) == 3 and all(0 < n < math.inf for n in norms)


def test_message_hub_is_the_one_current_at_construction(hub):
    wrapper = OptimWrapper(torch.optim.SGD(_model().parameters(), lr=0.1))
    later = MessageHub.get_instance("test_optim_wrapper::later")
    assert MessageHub.get_current_instance() is later
    assert wrapper.message_hub is hub


# ------------------------------------------------------- param groups, lr, state dicts
def _two_group_sgd(model: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(
        [{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.5}],
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
    )


def test_pseudo_group_with_several_groups(hub):
    model = _model()
    wrapper = OptimWrapper(_two_group_sgd(model))
    groups = wrapper.param_groups
    assert len(groups) == 3 and groups[:2] == wrapper.optimizer.param_groups
    pseudo = groups[2]
    assert torch.equal(pseudo["params"], torch.tensor([0.0]))
    assert {k: v for k, v in pseudo.items() if k != "params"} == wrapper.optimizer.defaults
    assert wrapper.get_lr() == {"base_lr": [0.1], "lr": [0.1, 0.5]}
    assert wrapper.defaults is wrapper.optimizer.defaults
    # a scheduler walks param_groups, so it also moves the base lr
    for group in wrapper.param_groups:
        group["lr"] *= 0.5
    assert wrapper.get_lr() == {"base_lr": [0.05], "lr": [0.05, 0.25]}


def test_single_group_has_no_pseudo_group(hub):
    wrapper = OptimWrapper(torch.optim.SGD(_model().parameters(), lr=0.1))
    assert wrapper.base_param_settings is None
    assert wrapper.param_groups is wrapper.optimizer.param_groups
    assert wrapper.get_lr() == {"lr": [0.1]}
    assert "base_param_settings" not in wrapper.state_dict()


def test_get_momentum(hub):
    model = _model()
    assert OptimWrapper(_two_group_sgd(model)).get_momentum() == {"momentum": [0.9, 0.9]}
    adam = torch.optim.Adam(model.parameters(), betas=(0.8, 0.99))
    assert OptimWrapper(adam).get_momentum() == {"momentum": [0.8]}
    assert OptimWrapper(torch.optim.Adagrad(model.parameters())).get_momentum() == {"momentum": [0]}


def test_state_dict_round_trip_with_pseudo_group(hub, tmp_path):
    model = _model()
    wrapper = OptimWrapper(_two_group_sgd(model))
    for x in _batches(2):
        wrapper.update_params(_loss(model, x))
    for group in wrapper.param_groups:
        group["lr"] *= 0.1
    state = wrapper.state_dict()
    assert state["base_param_settings"]["lr"] == pytest.approx(0.01)
    torch.save(state, tmp_path / "wrapper.pth")
    loaded = torch.load(tmp_path / "wrapper.pth", weights_only=True)

    fresh_model = _model(seed=5)
    fresh = OptimWrapper(_two_group_sgd(fresh_model))
    fresh.load_state_dict(loaded)
    assert "base_param_settings" in loaded  # the caller's dict is not modified
    assert fresh.get_lr() == wrapper.get_lr()
    assert fresh.get_lr()["base_lr"] == pytest.approx([0.01])
    new_state = fresh.state_dict()
    for key in ("param_groups", "base_param_settings"):
        assert str(new_state[key]) == str(state[key])
    for pid, buffers in state["state"].items():
        assert torch.equal(new_state["state"][pid]["momentum_buffer"], buffers["momentum_buffer"])


def test_repr(hub):
    opt = torch.optim.SGD(_model().parameters(), lr=0.1)
    wrapper = OptimWrapper(opt, accumulative_counts=4)
    assert repr(wrapper) == f"Type: OptimWrapper\n_accumulative_counts: 4\noptimizer: \n{opt!r}\n"


# ---------------------------------------------------------------- optim_context and DDP
@pytest.fixture(scope="module")
def gloo_group(tmp_path_factory: pytest.TempPathFactory):
    if dist.is_initialized():
        pytest.fail("a process group is already initialized")
    store = tmp_path_factory.mktemp("gloo") / "store"
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("wrapper_cls", [OptimWrapper, AmpOptimWrapper])
def test_optim_context_skips_ddp_sync_while_accumulating(hub, gloo_group, wrapper_cls):
    ddp = nn.parallel.DistributedDataParallel(_model())
    ref = _model()
    kwargs = {"dtype": "float32"} if wrapper_cls is AmpOptimWrapper else {}
    wrapper = wrapper_cls(
        optimizer=torch.optim.SGD(ddp.parameters(), lr=0.1), accumulative_counts=3, **kwargs
    )
    wrapper.initialize_count_status(ddp, 0, 7)
    ref_wrapper = OptimWrapper(torch.optim.SGD(ref.parameters(), lr=0.1), accumulative_counts=3)
    ref_wrapper.initialize_count_status(ref, 0, 7)
    synced = []
    for x in _batches(7):
        with wrapper.optim_context(ddp):
            synced.append(ddp.require_backward_grad_sync)
            loss = _loss(ddp, x)
        wrapper.update_params(loss)
        ref_wrapper.update_params(_loss(ref, x))
    assert synced == [False, False, True, False, False, True, True]
    assert ddp.require_backward_grad_sync
    for p, q in zip(ddp.module.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q)


def test_amp_use_fsdp_uses_the_sharded_grad_scaler(hub, gloo_group):
    from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

    model = _model()
    wrapper = AmpOptimWrapper(
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        dtype="float16",
        use_fsdp=True,
        loss_scale={"init_scale": 4.0, "growth_interval": 1},
        clip_grad={"max_norm": 1.0},
    )
    assert isinstance(wrapper.loss_scaler, ShardedGradScaler)
    with wrapper.optim_context(model):
        loss = _loss(model, _batches(1)[0])
    wrapper.update_params(loss)
    assert wrapper.state_dict()["loss_scaler"]["scale"] == 8.0  # grew after a clean step


def test_optim_context_on_a_module_without_no_sync(hub):
    model = _model()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    for x in _batches(2):
        with wrapper.optim_context(model):
            loss = _loss(model, x)
        wrapper.update_params(loss)
    assert wrapper.inner_count == 2


# ---------------------------------------------------------------------- OptimWrapperDict
def test_optim_wrapper_dict(hub, tmp_path):
    gen, disc = _model(1), _model(2)
    wrappers = OptimWrapperDict(
        gen=OptimWrapper(torch.optim.SGD(gen.parameters(), lr=0.1, momentum=0.5)),
        disc=OptimWrapper(torch.optim.Adam(disc.parameters(), lr=0.01)),
    )
    assert isinstance(wrappers, OptimWrapper)
    assert len(wrappers) == 2 and "gen" in wrappers and "x" not in wrappers
    assert list(wrappers.keys()) == ["gen", "disc"]
    assert [w for _, w in wrappers.items()] == list(wrappers.values())
    assert wrappers.get_lr() == {"gen.lr": [0.1], "disc.lr": [0.01]}
    assert wrappers.get_momentum() == {"gen.momentum": [0.5], "disc.momentum": [0.9]}
    assert wrappers.param_groups["disc"] is wrappers["disc"].param_groups

    x = _batches(1)[0]
    wrappers["gen"].update_params(_loss(gen, x))
    wrappers["disc"].update_params(_loss(disc, x))
    state = wrappers.state_dict()
    assert set(state) == {"gen", "disc"}
    torch.save(state, tmp_path / "d.pth")
    other = OptimWrapperDict(
        gen=OptimWrapper(torch.optim.SGD(gen.parameters(), lr=0.1, momentum=0.5)),
        disc=OptimWrapper(torch.optim.Adam(disc.parameters(), lr=0.01)),
    )
    other.load_state_dict(torch.load(tmp_path / "d.pth", weights_only=True))
    assert other["disc"].optimizer.state_dict()["state"][0]["step"] == 1
    assert "name: gen\nType: OptimWrapper" in repr(wrappers)

    _loss(gen, x).backward()
    _loss(disc, x).backward()
    wrappers.zero_grad()
    assert all(p.grad is None for m in (gen, disc) for p in m.parameters())
    wrappers.initialize_count_status(gen, 0, 10)  # a no-op, as in MMEngine


def test_optim_wrapper_dict_rejects_what_it_cannot_do(hub):
    model = _model()
    wrappers = OptimWrapperDict(a=OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1)))
    loss = _loss(model, _batches(1)[0])
    with pytest.raises(NotImplementedError, match="update_params"):
        wrappers.update_params(loss)
    with pytest.raises(NotImplementedError, match="backward"):
        wrappers.backward(loss)
    with pytest.raises(NotImplementedError, match="step"):
        wrappers.step()
    with pytest.raises(NotImplementedError, match="optim_context"):
        with wrappers.optim_context(model):
            pass
    with pytest.raises(KeyError, match="Cannot find b in OptimWrapperDict"):
        wrappers["b"]
    with pytest.raises(KeyError, match="cannot found b"):
        wrappers.load_state_dict({"b": {}})
    with pytest.raises(TypeError, match="only accept OptimWrapper instance"):
        OptimWrapperDict(a=torch.optim.SGD(model.parameters(), lr=0.1))  # type: ignore[arg-type]
