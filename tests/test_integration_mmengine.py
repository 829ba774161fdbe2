"""fastopt optimizers under MMEngine's own Runner (needs the `mmengine` or `mmengine-lite` package).

Skipped only when MMEngine's runner cannot be imported (package not installed; mmengine-lite
also needs opencv-python-headless for ``mmengine.runner``).
"""

from __future__ import annotations

import copy
import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip(
    "mmengine.runner", reason="MMEngine (mmengine or mmengine-lite + opencv) not installed"
)

from mmengine.config import Config as MMEngineConfig  # noqa: E402
from mmengine.logging import MessageHub  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.optim import OptimWrapper as MMEngineOptimWrapper  # noqa: E402
from mmengine.registry import OPTIM_WRAPPERS, OPTIMIZERS  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import fastopt.integrations.mmengine as integration  # noqa: E402
from fastopt.benchmark.references import ReferenceAdan, ReferenceLamb  # noqa: E402
from fastopt.optim import FusedAdamW, FusedLARS, FusedLion, FusedSGD  # noqa: E402

_names = itertools.count()


class ToyModel(BaseModel):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 2)

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor, mode: str = "tensor"):
        # a ReLU before BN: a conv bias right before BN gets only rounding-noise gradients
        out = self.fc(self.bn(F.relu(self.conv(inputs))).mean((2, 3)))
        if mode == "loss":
            return dict(loss=F.cross_entropy(out, labels))
        return out


def make_model() -> ToyModel:
    torch.manual_seed(0)
    return ToyModel()


def train(model: nn.Module, optim_wrapper: dict, tmp_path, epochs: int = 2) -> Runner:
    """Train with MMEngine's Runner (fixed data, no shuffling) and return the runner."""
    torch.manual_seed(1)
    data = TensorDataset(torch.randn(8, 3, 6, 6), torch.randint(0, 2, (8,)))
    runner = Runner(
        model=model,
        work_dir=str(tmp_path / f"run{next(_names)}"),
        train_dataloader=DataLoader(data, batch_size=4, shuffle=False),
        train_cfg=dict(by_epoch=True, max_epochs=epochs),
        optim_wrapper=optim_wrapper,
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=1)),
        env_cfg=dict(dist_cfg=dict(backend="gloo")),
        experiment_name=f"fastopt_test_{next(_names)}",  # distinct: runners share loggers by name
        log_level="WARNING",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        runner.train()
    return runner


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_registered_names():
    assert OPTIMIZERS.get("FusedSGD") is FusedSGD and OPTIMIZERS.get("FusedAdamW") is FusedAdamW
    assert OPTIMIZERS.get("FusedLARS") is FusedLARS
    # MMEngine registers bitsandbytes' optimizers (its LARS too) when bitsandbytes is installed;
    # fastopt then leaves `LARS` to it, as `Lion` to lion-pytorch's
    for name, cls in (("LARS", FusedLARS), ("Lion", FusedLion)):
        taken = OPTIMIZERS.get(name)
        assert (taken is cls) == (name in integration.REGISTERED["optimizers"])
        assert taken is cls or not taken.__module__.startswith("fastopt.")
    assert OPTIM_WRAPPERS.get("FusedOptimWrapper") is integration.FusedOptimWrapper
    assert OPTIM_WRAPPERS.get("OptimWrapper") is MMEngineOptimWrapper  # MMEngine's is untouched
    assert OPTIMIZERS.get("AdamW") is torch.optim.AdamW
    # idempotent; a name taken by someone else is left alone with a warning
    assert integration.register() == integration.REGISTERED
    OPTIMIZERS.register_module(name="FusedSGD", module=torch.optim.SGD, force=True)
    try:
        with pytest.warns(UserWarning, match="already has FusedSGD"):
            done = integration.register()
        assert (
            "FusedSGD" not in done["optimizers"] and OPTIMIZERS.get("FusedSGD") is torch.optim.SGD
        )
        integration.register(force=True)
        assert OPTIMIZERS.get("FusedSGD") is FusedSGD
    finally:
        OPTIMIZERS.register_module(name="FusedSGD", module=FusedSGD, force=True)


def test_mmengine_config_with_custom_imports(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(
        "custom_imports = dict(imports=['fastopt.integrations.mmengine'], allow_failed_imports=False)\n"
        "optim_wrapper = dict(optimizer=dict(type='FusedAdamW', lr=0.01, weight_decay=0.05),"
        " paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0))\n"
    )
    cfg = MMEngineConfig.fromfile(str(path))
    from mmengine.optim import build_optim_wrapper

    model = make_model()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, MMEngineOptimWrapper) and isinstance(wrapper.optimizer, FusedAdamW)
    decays = [g["weight_decay"] for g in wrapper.optimizer.param_groups]
    assert decays == [0.05, 0.0, 0.0, 0.0, 0.05, 0.0]  # conv.w, conv.b, bn.w, bn.b, fc.w, fc.b


def test_runner_fused_adamw_matches_torch_adamw(tmp_path):
    paramwise = dict(norm_decay_mult=0.0, custom_keys={"fc": dict(lr_mult=0.5)})
    cfg = dict(optimizer=dict(type="AdamW", lr=0.01, weight_decay=0.05), paramwise_cfg=paramwise)
    fused_cfg = copy.deepcopy(cfg)
    fused_cfg["optimizer"]["type"] = "FusedAdamW"
    reference, fused = make_model(), make_model()
    train(reference, cfg, tmp_path)
    runner = train(fused, fused_cfg, tmp_path)
    assert isinstance(runner.optim_wrapper.optimizer, FusedAdamW)
    assert len(runner.optim_wrapper.optimizer.param_groups) == 6
    assert runner.iter == 4 and runner.epoch == 2
    assert_same_weights(fused, reference)


def test_runner_fused_sgd_with_fused_wrapper_and_clipping(tmp_path):
    clip = dict(max_norm=0.5)
    cfg = dict(
        optimizer=dict(type="SGD", lr=0.1, momentum=0.9, weight_decay=1e-4),
        paramwise_cfg=dict(bias_lr_mult=2.0, norm_decay_mult=0.0),
        clip_grad=clip,
    )
    fused_cfg = copy.deepcopy(cfg)
    fused_cfg["optimizer"]["type"] = "FusedSGD"
    fused_cfg["type"] = "FusedOptimWrapper"
    reference, fused = make_model(), make_model()
    train(reference, cfg, tmp_path)
    reference_norms = MessageHub.get_current_instance().get_scalar("train/grad_norm").data[0]
    runner = train(fused, fused_cfg, tmp_path)
    assert type(runner.optim_wrapper) is integration.FusedOptimWrapper
    assert isinstance(runner.optim_wrapper.optimizer, FusedSGD)
    assert clip == dict(max_norm=0.5)  # not modified
    norms = runner.message_hub.get_scalar("train/grad_norm").data[0]
    assert len(norms) == 4
    torch.testing.assert_close(torch.as_tensor(norms), torch.as_tensor(reference_norms))
    assert_same_weights(fused, reference)


def test_runner_lars_with_lars_exclude(tmp_path):
    model = make_model()
    before = copy.deepcopy(model.state_dict())
    cfg = dict(
        optimizer=dict(type="FusedLARS", lr=0.3, momentum=0.9, weight_decay=1e-6),
        paramwise_cfg=dict(
            custom_keys={
                "bn": dict(decay_mult=0, lars_exclude=True),
                "bias": dict(decay_mult=0, lars_exclude=True),
            }
        ),
    )
    runner = train(model, cfg, tmp_path)
    optimizer = runner.optim_wrapper.optimizer
    assert isinstance(optimizer, FusedLARS)
    excluded = [g.get("lars_exclude", False) for g in optimizer.param_groups]
    assert excluded == [False, True, True, True, False, True]  # conv.w/b, bn.w/b, fc.w/b
    for name, value in model.state_dict().items():
        if value.is_floating_point() and "running" not in name:
            assert not torch.equal(value, before[name]), name


@pytest.mark.parametrize(
    "name,reference,kw",
    [
        ("Lamb", ReferenceLamb, dict(lr=1e-2, weight_decay=0.01)),
        ("Adan", ReferenceAdan, dict(lr=1e-2, weight_decay=0.02)),
        # MMEngine registers lion-pytorch's Lion as `Lion`: fastopt's is FusedLion there
        ("FusedLion", "Lion", dict(lr=1e-3, weight_decay=0.1)),
        ("FusedAdagrad", "Adagrad", dict(lr=0.1, lr_decay=0.01)),
        ("FusedRMSprop", "RMSprop", dict(lr=1e-2, momentum=0.9, centered=True)),
    ],
)
def test_runner_new_optimizers_match_their_references(tmp_path, name, reference, kw):
    if not isinstance(reference, str):  # the rule written from timm's, under a test-only name
        OPTIMIZERS.register_module(name=f"test_{name}", module=reference, force=True)
        reference = f"test_{name}"
    fused, ref = make_model(), make_model()
    runner = train(fused, dict(optimizer=dict(type=name, **kw)), tmp_path)
    assert type(runner.optim_wrapper.optimizer) is OPTIMIZERS.get(name)
    assert type(runner.optim_wrapper.optimizer).__module__.startswith("fastopt.")
    train(ref, dict(optimizer=dict(type=reference, **kw)), tmp_path)
    assert_same_weights(fused, ref)
