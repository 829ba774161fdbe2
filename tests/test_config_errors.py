"""Bad values in a config are refused with a message naming the config file and key."""

from __future__ import annotations

import textwrap
import warnings
from pathlib import Path

import pytest
import runner_toys as toys
import torch
from torch import nn

from fastopt.config import Config
from fastopt.constructor import (
    DefaultOptimWrapperConstructor,
    LearningRateDecayOptimWrapperConstructor,
    build_optim_wrapper,
)
from fastopt.registry import OPTIM_WRAPPER_CONSTRUCTORS, BuildArgumentError
from fastopt.runner import Runner  # noqa: E402
from fastopt.scheduler import build_param_schedulers


def model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))


def config(tmp_path: Path, text: str) -> tuple[Config, Path]:
    path = tmp_path / "cfg.py"
    path.write_text(textwrap.dedent(text))
    return Config.fromfile(path), path


def build_error(cfg, error=(TypeError, ValueError)) -> str:
    with pytest.raises(error) as exc:
        build_optim_wrapper(model(), cfg)
    return str(exc.value)


# --------------------------------------------------------------------------- optimizer values
@pytest.mark.parametrize(
    ("optimizer", "error", "expected"),
    [
        (
            "dict(type='FusedAdamW', lr='abc')",
            TypeError,
            "FusedAdamW rejects lr='abc': Invalid learning rate: 'abc' is not a number "
            "(in config file {path}, key optim_wrapper.optimizer.lr)",
        ),
        (
            "dict(type='AdamW', lr='abc', weight_decay=0.05)",
            TypeError,
            "AdamW rejects lr='abc': '<=' not supported between instances of 'float' and 'str' "
            "(in config file {path}, key optim_wrapper.optimizer.lr)",
        ),
        (
            "dict(type='FusedSGD', lr=-0.1, momentum=0.9)",
            ValueError,
            "FusedSGD rejects lr=-0.1: Invalid learning rate: -0.1 "
            "(in config file {path}, key optim_wrapper.optimizer.lr)",
        ),
        (
            "dict(type='FusedAdam', lr=0.1, eps=-1.0)",
            ValueError,
            "FusedAdam rejects eps=-1.0: Invalid epsilon value: -1.0 "
            "(in config file {path}, key optim_wrapper.optimizer.eps)",
        ),
        (
            "dict(type='FusedSGD', lr=0.1, nesterov=True)",
            ValueError,
            "FusedSGD rejects nesterov=True: Nesterov momentum requires a momentum and zero "
            "dampening (in config file {path}, key optim_wrapper.optimizer.nesterov)",
        ),
        (  # 3 betas: torch fails at the first step, a fused optimizer would read two
            "dict(type='FusedAdamW', lr=0.1, betas=(0.9, 0.999, 0.5))",
            ValueError,
            "FusedAdamW takes betas of 2 values (default (0.9, 0.999)), but got "
            "betas=(0.9, 0.999, 0.5) (in config file {path}, key optim_wrapper.optimizer.betas)",
        ),
        (
            "dict(type='Adam', lr=0.1, betas=[0.9])",
            ValueError,
            "Adam takes betas of 2 values (default (0.9, 0.999)), but got betas=[0.9] "
            "(in config file {path}, key optim_wrapper.optimizer.betas)",
        ),
        (
            "dict(type='Rprop', lr=0.1, etas=(0.5, 1.2, 2.0))",
            ValueError,
            "Rprop takes etas of 2 values (default (0.5, 1.2)), but got etas=(0.5, 1.2, 2.0) "
            "(in config file {path}, key optim_wrapper.optimizer.etas)",
        ),
    ],
)
def test_rejected_optimizer_values_name_the_key(tmp_path, optimizer, error, expected):
    cfg, path = config(tmp_path, f"optim_wrapper = dict(optimizer={optimizer})\n")
    assert build_error(cfg.optim_wrapper, error) == expected.format(path=path)
    # the same with param groups from paramwise_cfg
    cfg.optim_wrapper.paramwise_cfg = dict(norm_decay_mult=0.0, bias_decay_mult=0.0)
    if "weight_decay" not in cfg.optim_wrapper.optimizer:
        cfg.optim_wrapper.optimizer.weight_decay = 0.01
    assert build_error(cfg.optim_wrapper, error) == expected.format(path=path)


def test_values_set_by_cfg_options_say_so(tmp_path):
    cfg, path = config(tmp_path, "optim_wrapper = dict(optimizer=dict(type='FusedAdamW'))\n")
    cfg.merge_from_dict({"optim_wrapper.optimizer.lr": "abc"})
    assert build_error(cfg.optim_wrapper).endswith(
        f"(in config file {path}, key optim_wrapper.optimizer.lr, set by --cfg-options)"
    )
    cfg.merge_from_dict({"optim_wrapper.optimizer": dict(lr=0.1, betas=(0.9, 0.9, 0.9))})
    assert build_error(cfg.optim_wrapper).endswith(
        f"(in config file {path}, key optim_wrapper.optimizer.betas, set by --cfg-options)"
    )
    # also through the Runner, which copies the config
    runner_cfg = Config(toys.make_cfg(tmp_path / "work"), filename=path)
    runner_cfg.merge_from_dict({"optim_wrapper.optimizer.lr": "abc"})
    runner = Runner.from_cfg(runner_cfg)
    with pytest.raises(TypeError) as exc:
        runner.train()
    assert str(exc.value).endswith("key optim_wrapper.optimizer.lr, set by --cfg-options)")


def test_config_without_a_file_names_the_usual_key():
    msg = build_error(dict(optimizer=dict(type="SGD", lr="abc")))
    assert msg.endswith("(in key optim_wrapper.optimizer.lr)")


@pytest.mark.parametrize(
    ("paramwise", "optimizer", "expected"),
    [
        (
            "dict(bias_lr_mult=2.0)",
            "dict(type='SGD', lr='0.1')",
            "lr must be a number, but got '0.1' (in config file {path}, key "
            "optim_wrapper.optimizer.lr)",
        ),
        (
            "dict(norm_decay_mult=0.0)",
            "dict(type='SGD', lr=0.1, weight_decay='1e-4')",
            "weight_decay must be a number, but got '1e-4' (in config file {path}, key "
            "optim_wrapper.optimizer.weight_decay)",
        ),
        (
            "dict(bias_lr_mult='2')",
            "dict(type='SGD', lr=0.1)",
            "bias_lr_mult must be a number, but got '2' (in config file {path}, key "
            "optim_wrapper.paramwise_cfg.bias_lr_mult)",
        ),
        (
            "dict(custom_keys={'.bias': dict(lr_mult=[2])})",
            "dict(type='SGD', lr=0.1)",
            "lr_mult must be a number, but got [2] (in config file {path}, key "
            "optim_wrapper.paramwise_cfg.custom_keys['.bias'].lr_mult)",
        ),
        (
            "dict(custom_keys={'.bias': dict(betas=(0.9, 0.99, 0.1))})",
            "dict(type='FusedAdam', lr=0.1)",
            "FusedAdam takes betas of 2 values (default (0.9, 0.999)), but got "
            "betas=(0.9, 0.99, 0.1) (in config file {path}, key "
            "optim_wrapper.paramwise_cfg.custom_keys['.bias'].betas)",
        ),
    ],
)
def test_rejected_paramwise_values_name_the_key(tmp_path, paramwise, optimizer, expected):
    cfg, path = config(
        tmp_path, f"optim_wrapper = dict(optimizer={optimizer}, paramwise_cfg={paramwise})\n"
    )
    assert build_error(cfg.optim_wrapper) == expected.format(path=path)


def test_a_tensor_lr_and_right_lengths_still_build():
    wrapper = build_optim_wrapper(
        model(),
        dict(
            optimizer=dict(type="Adam", lr=torch.tensor(0.01), betas=[0.8, 0.9]),
            paramwise_cfg=dict(bias_lr_mult=2.0),
        ),
    )
    assert wrapper.optimizer.param_groups[1]["lr"] == pytest.approx(0.02)
    wrapper = build_optim_wrapper(
        model(), dict(optimizer=dict(type="TorchAdafactor", lr=0.01, eps=(None, 1e-3)))
    )
    assert wrapper.optimizer.defaults["eps"] == (None, 1e-3)


# --------------------------------------------------------------------------- paramwise keys
def test_unknown_paramwise_key_is_an_error_with_the_closest_name(tmp_path):
    cfg, path = config(
        tmp_path,
        "optim_wrapper = dict(optimizer=dict(type='SGD', lr=0.1),"
        " paramwise_cfg=dict(bias_lr_multt=2.0))\n",
    )
    msg = build_error(cfg.optim_wrapper, ValueError)
    assert msg.startswith(
        "'bias_lr_multt' is not a paramwise_cfg key of DefaultOptimWrapperConstructor; did you "
        "mean 'bias_lr_mult'? It reads: bias_decay_mult, bias_lr_mult, bypass_duplicate, "
        "custom_keys, dcn_offset_lr_mult, dwconv_decay_mult, flat_decay_mult, norm_decay_mult"
    )
    assert msg.endswith(f"(in config file {path}, key optim_wrapper.paramwise_cfg.bias_lr_multt)")
    # the layer-decay constructor reads its own keys: bias_lr_mult means nothing there
    with pytest.raises(ValueError, match="'bias_lr_mult' is not a paramwise_cfg key of Learn"):
        LearningRateDecayOptimWrapperConstructor(
            dict(optimizer=dict(type="AdamW", lr=0.1)),
            dict(layer_decay_rate=0.5, bias_lr_mult=2.0),
        )
    with pytest.raises(ValueError, match="did you mean 'layer_decay_rate'"):
        LearningRateDecayOptimWrapperConstructor(
            dict(optimizer=dict(type="AdamW", lr=0.1)), dict(layer_decay=0.5)
        )


def test_delete_marker_in_paramwise_cfg_is_accepted():
    # MMEngine keeps `_delete_=True` in a child dict that had no base dict to replace
    wrapper = build_optim_wrapper(
        model(),
        dict(
            optimizer=dict(type="SGD", lr=0.1, weight_decay=0.01),
            paramwise_cfg=dict(_delete_=True, norm_decay_mult=0.0),
        ),
    )
    assert wrapper.optimizer.param_groups[2]["weight_decay"] == 0.0  # bn.weight


def test_subclass_keys():
    class Unlisted(DefaultOptimWrapperConstructor):
        """Reads `decay_rate` itself but does not list it: a warning only."""

    class Listed(DefaultOptimWrapperConstructor):
        PARAMWISE_KEYS = DefaultOptimWrapperConstructor.PARAMWISE_KEYS | {"decay_rate"}

    optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1))
    with pytest.warns(
        UserWarning,
        match="'decay_rate' is not a paramwise_cfg key of Unlisted.*"
        "list the keys Unlisted reads in its PARAMWISE_KEYS",
    ):
        Unlisted(optim_wrapper, dict(decay_rate=0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Listed(optim_wrapper, dict(decay_rate=0.5))
    with pytest.raises(ValueError, match="'decay_rte' is not a paramwise_cfg key of Listed; did"):
        Listed(optim_wrapper, dict(decay_rte=0.5))
    assert OPTIM_WRAPPER_CONSTRUCTORS.get("DefaultOptimWrapperConstructor") is not Listed


# --------------------------------------------------------------------------- schedulers
SCHEDULERS = """
    param_scheduler = [
        dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=5),
        dict(type='CosineAnnealingLR', T_maxx=10, by_epoch=True),
        dict(type='MultiStepLR', milestone=[1], convert_to_iter_based=True),
        dict(type='StepLR', step_size=1, begin=3, end=2),
    ]
"""


def test_scheduler_errors_name_the_file_and_key(tmp_path):
    cfg, path = config(tmp_path, SCHEDULERS)
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    errors = []
    for entry in cfg.param_scheduler[1:]:
        with pytest.raises((TypeError, ValueError)) as exc:
            build_param_schedulers([entry], optimizer, epoch_length=3, max_epochs=2)
        errors.append(exc.value)
    assert isinstance(errors[0], BuildArgumentError)
    assert str(errors[0]).startswith(
        "CosineAnnealingLR (from the fastopt::parameter scheduler registry) got unexpected "
        "keyword 'T_maxx'; it accepts: optimizer, T_max,"
    )
    assert "unexpected keyword argument 'milestone'" in str(errors[1])
    for i, error in enumerate(errors, start=1):
        assert str(error).endswith(f"(in config file {path}, key param_scheduler.{i})"), error
    # the config is not modified by building
    assert "end" not in cfg.param_scheduler[1]


def test_scheduler_keyword_error_through_the_runner(tmp_path):
    path = tmp_path / "cfg.py"
    cfg = Config(
        toys.make_cfg(
            tmp_path / "work",
            param_scheduler=[dict(type="MultiStepLR", milestons=[1], by_epoch=True)],
        ),
        cfg_text="",
        filename=path,
    )
    runner = Runner.from_cfg(cfg)
    with pytest.raises(TypeError) as exc:
        runner.train()
    msg = str(exc.value)
    assert "MultiStepLR" in msg and "unexpected keyword 'milestons'" in msg
    assert msg.endswith(f"(in config file {path}, key param_scheduler.0)")


def test_optim_wrapper_keyword_error_through_the_runner(tmp_path):
    path = tmp_path / "cfg.py"
    optim_wrapper = dict(optimizer=dict(type="SGD", lr=0.1), clip_gard=dict(max_norm=1))
    cfg = Config(
        toys.make_cfg(tmp_path / "work", optim_wrapper=optim_wrapper), cfg_text="", filename=path
    )
    runner = Runner.from_cfg(cfg)
    with pytest.raises(BuildArgumentError) as exc:
        runner.train()
    msg = str(exc.value)
    assert msg.startswith("OptimWrapper (from the fastopt::optim_wrapper registry) got unexpected")
    assert msg.endswith(f"(in config file {path}, key optim_wrapper)")
