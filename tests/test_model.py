"""BaseModel protocol, loss parsing, data preprocessing, averaged models, plain modules."""

from __future__ import annotations

import copy
import logging
import re
from collections import namedtuple
from contextlib import contextmanager
from pathlib import Path

import pytest
import runner_toys as toys
import torch
from torch import nn

from fastopt.model import (  # noqa: E402
    BaseDataPreprocessor,
    BaseModel,
    BaseModule,
    ExponentialMovingAverage,
    ImgDataPreprocessor,
    ModuleDict,
    ModuleList,
    MomentumAnnealingEMA,
    Sequential,
    StochasticWeightAverage,
    cast_data,
    convert_sync_batchnorm,
    is_model_wrapper,
    parse_losses,
    revert_sync_batchnorm,
    stack_batch,
    steps,  # noqa: E402
    unwrap_model,
)
from fastopt.runner import Runner  # noqa: E402
from fastopt.wrapper import OptimWrapper  # noqa: E402


# ----------------------------------------------------------------------------- parse_losses
def test_parse_losses_sums_every_loss_entry_and_logs_all():
    losses = dict(
        loss_cls=torch.tensor([1.0, 3.0]),  # mean 2
        loss_box=[torch.tensor(0.5), torch.tensor([1.0, 2.0])],  # 0.5 + 1.5
        acc=torch.tensor(0.25),
    )
    total, log_vars = parse_losses(losses)
    assert total.item() == pytest.approx(4.0)
    assert list(log_vars) == ["loss", "loss_cls", "loss_box", "acc"]
    assert [v.item() for v in log_vars.values()] == pytest.approx([4.0, 2.0, 2.0, 0.25])
    assert all(not v.requires_grad for v in log_vars.values())


def test_parse_losses_errors_name_the_entry():
    with pytest.raises(TypeError, match="loss_x is not a tensor or list of tensors"):
        parse_losses(dict(loss_x=1.0))
    with pytest.raises(ValueError, match=r"\['acc'\] contain no entry with 'loss'"):
        parse_losses(dict(acc=torch.tensor(1.0)))
    with pytest.raises(TypeError, match="must return a dict of losses"):
        parse_losses(torch.tensor(1.0))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ BaseModel
class CountingNoSync(toys.RunnerToyModel):
    def __init__(self):
        super().__init__()
        self.no_sync_calls = 0

    @contextmanager
    def no_sync(self):
        self.no_sync_calls += 1
        yield


def test_train_step_runs_forward_in_optim_context_and_updates():
    model = CountingNoSync()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1), accumulative_counts=2)
    batch = dict(inputs=list(torch.randn(4, 4)), data_samples=list(torch.tensor([0, 1, 0, 1])))
    before = model.fc.weight.detach().clone()
    log_vars = model.train_step(batch, wrapper)
    assert set(log_vars) == {"loss", "acc"}
    assert model.no_sync_calls == 1  # first of two accumulated iterations: no DDP all-reduce
    assert torch.equal(model.fc.weight, before)  # not updated yet
    model.train_step(batch, wrapper)
    assert model.no_sync_calls == 1
    assert not torch.equal(model.fc.weight, before)


def test_val_and_test_step_predict_through_the_preprocessor():
    model = toys.RunnerToyModel().eval()
    batch = dict(inputs=list(torch.randn(2, 4)), data_samples=list(torch.tensor([0, 1])))
    assert len(model.val_step(batch)) == 2 and len(model.test_step(batch)) == 2
    # a tuple batch is passed positionally
    out = model.val_step((torch.randn(2, 4), torch.tensor([1, 1])))
    assert [label for _, label in out] == [1, 1]
    with pytest.raises(TypeError, match="must be a dict, a list or a tuple, but got Tensor"):
        model.val_step(torch.randn(2, 4))


def test_base_model_forward_must_be_implemented():
    with pytest.raises(NotImplementedError, match="BaseModel must implement forward"):
        BaseModel()(torch.zeros(1))


def test_data_preprocessor_config_and_device_tracking():
    model = toys.RunnerToyModel(
        data_preprocessor=dict(type="BaseDataPreprocessor", non_blocking=True)
    )
    assert isinstance(model.data_preprocessor, BaseDataPreprocessor)
    assert model.data_preprocessor.device == torch.device("cpu")
    model.to("meta")  # any move of the model moves where batches go
    assert model.data_preprocessor.device.type == "meta"
    out = model.data_preprocessor(dict(inputs=[torch.ones(2)], name="x"))
    assert out["inputs"][0].device.type == "meta" and out["name"] == "x"
    with pytest.raises(TypeError, match="data_preprocessor should be a dict or an nn.Module"):
        toys.RunnerToyModel(data_preprocessor="cuda")


def test_cast_data_rebuilds_containers():
    Pair = namedtuple("Pair", "a b")
    data = dict(x=[torch.ones(1), (torch.zeros(1), "s")], p=Pair(torch.ones(1), 3))
    out = cast_data(data, torch.device("meta"))
    assert out["x"][0].device.type == "meta" and isinstance(out["x"][1], tuple)
    assert out["x"][1][1] == "s" and isinstance(out["p"], Pair) and out["p"].b == 3
    assert out["p"].a.device.type == "meta"


# -------------------------------------------------------------------------- plain modules
def test_plain_module_steps():
    model = toys.PlainToyModule()
    wrapper = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1))
    batch = (torch.randn(4, 4), torch.tensor([0, 1, 0, 1]))
    before = model.fc.weight.detach().clone()
    log_vars = steps.train_step(model, batch, wrapper)
    assert list(log_vars) == ["loss"]
    assert not torch.equal(model.fc.weight, before)
    model.eval()
    assert len(steps.val_step(model, batch)) == 4 and len(steps.test_step(model, batch)) == 4


def test_plain_module_returning_a_tensor_or_garbage():
    class TensorLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, x):
            return (self.w * x).sum()

    class Garbage(TensorLoss):
        def forward(self, x):
            return "nope"

    model = TensorLoss()
    log_vars = steps.train_step(
        model, torch.ones(3), OptimWrapper(torch.optim.SGD(model.parameters(), lr=1.0))
    )
    assert log_vars["loss"].item() == 3.0 and model.w.item() == pytest.approx(-2.0)
    bad = Garbage()
    with pytest.raises(TypeError, match="Garbage has no train_step.*it returned str"):
        steps.train_step(
            bad, torch.ones(3), OptimWrapper(torch.optim.SGD(bad.parameters(), lr=1.0))
        )


def test_wrappers_are_recognised_and_unwrapped():
    model = toys.RunnerToyModel()
    wrapped = nn.DataParallel(model)
    assert is_model_wrapper(wrapped) and not is_model_wrapper(model)
    assert unwrap_model(wrapped) is model and unwrap_model(model) is model


# -------------------------------------------------------------------------- averaged models
def _source() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def test_ema_follows_lerp_and_copies_buffers():
    src = _source()
    ema = ExponentialMovingAverage(src, momentum=0.25)
    assert all(not p.requires_grad for p in ema.parameters())
    first = src[0].weight.detach().clone()
    ema.update_parameters(src)  # step 0 copies
    with torch.no_grad():
        src[0].weight.add_(1.0)
        src[1].running_mean.fill_(3.0)
    ema.update_parameters(src)
    torch.testing.assert_close(ema.module[0].weight, 0.75 * first + 0.25 * (first + 1.0))
    torch.testing.assert_close(ema.module[1].running_mean, torch.full((2,), 3.0))
    assert int(ema.steps) == 2
    assert set(ema.state_dict()) >= {"steps", "module.0.weight", "module.1.running_mean"}


def test_ema_interval_momentum_annealing_and_swa():
    src = _source()
    every_other = ExponentialMovingAverage(src, momentum=0.5, interval=2)
    anneal = MomentumAnnealingEMA(src, momentum=0.01, gamma=1)
    swa = StochasticWeightAverage(src)
    weights = []
    for step in range(3):
        with torch.no_grad():
            src[0].weight.fill_(float(step))
        weights.append(float(step))
        for model in (every_other, anneal, swa):
            model.update_parameters(src)
    # interval 2: steps 0 (copy: 0) and 2 (0.5 * 0 + 0.5 * 2) average; step 1 is skipped
    assert every_other.module[0].weight.mean().item() == pytest.approx(1.0)
    # momentum max(0.01, 1/(1+steps)): step1 0.5 -> 0.5, step2 1/3 -> 0.5 + (2-0.5)/3
    assert anneal.module[0].weight.mean().item() == pytest.approx(1.0)
    assert swa.module[0].weight.mean().item() == pytest.approx(sum(weights) / 3)


def test_averaged_model_argument_errors():
    with pytest.raises(ValueError, match=r"momentum must be in range \(0.0, 1.0\)"):
        ExponentialMovingAverage(_source(), momentum=1.5)
    with pytest.raises(ValueError, match="gamma must be greater than 0"):
        MomentumAnnealingEMA(_source(), gamma=0)
    with pytest.raises(ValueError, match="interval must be a positive int"):
        StochasticWeightAverage(_source(), interval=0)
    with pytest.warns(UserWarning, match="EMA momentum is usually small"):
        ExponentialMovingAverage(_source(), momentum=0.9)


# --------------------------------------------------- MMEngine behaviours (issue 20, §4)
class _Head(BaseModule):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)
        self.inits = 0

    def init_weights(self) -> None:
        self.inits += 1
        nn.init.constant_(self.fc.weight, 0.5)
        super().init_weights()


class _InitModel(toys.RunnerToyModel):
    """A model written for MMEngine: its init_weights ends with super().init_weights()."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.head = _Head()
        self.blocks = ModuleList([_Head(), nn.ReLU()])
        self.seen_before_train: list[float] = []

    def init_weights(self) -> None:
        nn.init.constant_(self.fc.bias, 0.25)
        super().init_weights()


class _RecordFirstStep(toys.Hook):
    def before_train_iter(self, runner, batch_idx, data_batch=None):
        model = unwrap_model(runner.model)
        if not model.seen_before_train:
            model.seen_before_train = model.fc.bias.tolist()


def test_runner_calls_init_weights_once_before_training_and_before_load_from(tmp_path):
    model = _InitModel()
    runner = Runner(**toys.make_cfg(tmp_path / "a", model=model, custom_hooks=[_RecordFirstStep()]))
    assert not model.is_init
    runner.train()
    assert model.is_init and model.head.is_init and model.blocks[0].is_init
    assert (model.head.inits, model.blocks[0].inits) == (1, 1)  # children, once each
    assert model.seen_before_train == [0.25, 0.25]  # initialised before the first iteration
    assert torch.equal(model.head.fc.weight, torch.full((2, 4), 0.5))  # not trained

    # weights loaded with load_from win over init_weights
    saved = torch.load(tmp_path / "a" / "epoch_2.pth", weights_only=True)["state_dict"]
    other = _InitModel()
    runner = Runner(
        **toys.make_cfg(
            tmp_path / "b",
            model=other,
            load_from=str(tmp_path / "a" / "epoch_2.pth"),
            train_cfg=dict(by_epoch=True, max_epochs=1),
            custom_hooks=[_RecordFirstStep()],
        )
    )
    runner.train()
    assert other.seen_before_train == saved["fc.bias"].tolist()


def test_init_weights_twice_warns_and_init_cfg_is_reported(caplog):
    head = _Head()
    with caplog.at_level(logging.WARNING, logger="fastopt.model"):
        head.init_weights()
        head.init_weights()
        BaseModule(init_cfg=dict(type="Kaiming", layer="Conv2d")).init_weights()
    assert "init_weights of _Head has been called more than once" in caplog.text
    assert "init_cfg={'type': 'Kaiming', 'layer': 'Conv2d'} is not applied" in caplog.text
    seq = Sequential(_Head(), nn.Linear(2, 2))
    mdict = ModuleDict({"a": _Head()})
    seq.init_weights()
    mdict.init_weights()
    assert seq[0].inits == 1 and mdict["a"].inits == 1
    assert "init_cfg=" in repr(BaseModule(init_cfg=dict(type="Normal")))


def test_img_data_preprocessor_stacks_pads_converts_and_normalises():
    pre = ImgDataPreprocessor(mean=[1.0, 2.0, 3.0], std=[2.0, 2.0, 2.0], pad_size_divisor=4,
                              pad_value=-1, bgr_to_rgb=True)  # fmt: skip
    a = torch.arange(3 * 2 * 3, dtype=torch.uint8).view(3, 2, 3)
    b = torch.ones(3, 3, 5, dtype=torch.uint8)
    out = pre(dict(inputs=[a, b], data_samples=["x", "y"]))
    assert out["data_samples"] == ["x", "y"]
    batch = out["inputs"]
    assert batch.shape == (2, 3, 4, 8) and batch.dtype == torch.float32
    mean = torch.tensor([1.0, 2.0, 3.0]).view(3, 1, 1)
    torch.testing.assert_close(batch[0, :, :2, :3], (a.flip(0).float() - mean) / 2)
    assert (batch[0, :, 2:, :] == -1).all() and (batch[0, :, :, 3:] == -1).all()
    # an NCHW tensor (default_collate) is padded as a whole
    nchw = pre(dict(inputs=torch.stack([a, a])))
    assert nchw["inputs"].shape == (2, 3, 4, 4) and nchw["data_samples"] is None
    torch.testing.assert_close(nchw["inputs"][1, :, :2, :3], batch[0, :, :2, :3])
    plain = ImgDataPreprocessor()(dict(inputs=[a, a]))["inputs"]
    torch.testing.assert_close(plain, torch.stack([a, a]).float())


@pytest.mark.parametrize(
    "kwargs, data, error, text",
    [
        (dict(bgr_to_rgb=True, rgb_to_bgr=True), None, ValueError, "cannot be set to True"),
        (dict(mean=[1.0]), None, ValueError, "both None"),
        (dict(mean=[1, 2], std=[1, 2]), None, ValueError, "1 or 3 values"),
        (dict(mean=[0] * 3, std=[1] * 3), dict(inputs=[torch.ones(1, 2, 2)]), ValueError, "(3, H, W)"),
        ({}, dict(inputs=torch.ones(3, 2, 2)), ValueError, "NCHW tensor"),
        ({}, dict(inputs="img"), TypeError, "'inputs' should be"),
        ({}, [torch.ones(3, 2, 2)], TypeError, "dict batch"),
    ],
)  # fmt: skip
def test_img_data_preprocessor_errors(kwargs, data, error, text):
    with pytest.raises(error, match=re.escape(text)):
        ImgDataPreprocessor(**kwargs)(data)


def test_stack_batch_pads_every_dim_but_the_first():
    out = stack_batch([torch.ones(2, 3), torch.ones(2, 5)], pad_size_divisor=2, pad_value=7)
    assert out.shape == (2, 2, 6)
    assert (out[0, :, 3:] == 7).all() and (out[1, :, 5:] == 7).all()
    with pytest.raises(ValueError, match="same number of dimensions"):
        stack_batch([torch.ones(2), torch.ones(2, 2)])
    with pytest.raises(ValueError, match="channel"):
        stack_batch([torch.ones(2, 2), torch.ones(3, 2)])
    with pytest.raises(TypeError, match="non-empty list"):
        stack_batch([])


def test_sync_batchnorm_is_reverted_in_a_single_process_run(tmp_path):
    model = toys.RunnerToyModel()
    model.bn = nn.SyncBatchNorm(4)
    weight = model.bn.weight
    runner = Runner(**toys.make_cfg(tmp_path, model=model, log_level="INFO"))
    bn = unwrap_model(runner.model).bn
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm) and not isinstance(bn, nn.SyncBatchNorm)
    assert bn.weight is weight  # the same parameters: an optimizer built before still works
    runner.flush_logs()
    log = Path(runner.log_dir, f"{runner.timestamp}.log").read_text()
    assert "SyncBatchNorm layers of the model are reverted to BatchNorm layers" in log
    runner.train()  # a SyncBatchNorm would need a process group here
    assert bn.num_batches_tracked.item() == 8


def test_convert_and_revert_sync_batchnorm_keep_parameters_and_state():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))
    net[1].running_mean.fill_(0.5)
    net.eval()
    reference = copy.deepcopy(net)  # converting rebuilds containers in place
    weight = net[1].weight
    synced = convert_sync_batchnorm(net)
    assert isinstance(synced[1], nn.SyncBatchNorm) and isinstance(synced[2][0], nn.SyncBatchNorm)
    assert synced[1].weight is weight and not synced[1].training
    assert torch.equal(synced[1].running_mean, torch.full((4,), 0.5))
    back = revert_sync_batchnorm(synced)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in back.modules())
    x = torch.randn(2, 3, 2, 2)
    torch.testing.assert_close(back(x), reference(x))  # the same eval output
    with pytest.raises(ValueError, match='sync_bn should be "torch" or "mmcv"'):
        convert_sync_batchnorm(net, "apex")
