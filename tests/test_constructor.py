"""Paramwise optimizer constructors: MMEngine's param groups (golden g2), layer-wise lr decay."""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
from torch import nn

import fastopt
from fastopt.config import Config
from fastopt.constructor import (
    DefaultOptimWrapperConstructor,
    LearningRateDecayOptimWrapperConstructor,
    build_optim_wrapper,
    infer_get_layer_depth,
)
from fastopt.optim import FusedLARS, FusedSGD
from fastopt.optim.base import FusedOptimizer
from fastopt.registry import OPTIM_WRAPPER_CONSTRUCTORS, UnknownTypeError
from fastopt.wrapper import OptimWrapper

SGD_CFG = dict(type="SGD", lr=0.01, momentum=0.9, weight_decay=1e-4)


class GoldenNet(nn.Module):
    """The model of golden g2: conv, bn, depthwise conv, gn, ln, linear, top-level params."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.scale = nn.Parameter(torch.ones(8))
        self.backbone = nn.Module()
        self.backbone.conv = nn.Conv2d(3, 8, 3)
        self.backbone.bn = nn.BatchNorm2d(8)
        self.backbone.dwconv = nn.Conv2d(8, 8, 3, groups=8)
        self.backbone.gn = nn.GroupNorm(2, 8)
        self.backbone.ln = nn.LayerNorm(8)
        self.neck = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.weight.requires_grad_(False)


class TiedNet(GoldenNet):
    """GoldenNet plus two linears sharing one weight, and a frozen module."""

    def __init__(self) -> None:
        super().__init__()
        self.tied_a = nn.Linear(8, 8)
        self.tied_b = nn.Linear(8, 8)
        self.tied_b.weight = self.tied_a.weight
        self.frozen_block = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.backbone
        y = b.ln(b.gn(b.dwconv(b.bn(b.conv(x)))).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        y = self.neck(y).mean((2, 3)) * self.scale + self.pos_embed.mean()
        y = self.tied_b(self.tied_a(self.frozen_block(y)))
        return self.head(y).sum() + self.frozen(torch.ones(1, 2)).sum()


def names_of(model: nn.Module) -> dict[int, str]:
    """id(param) -> its first name (a tied weight is named after its first owner)."""
    names: dict[int, str] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        names.setdefault(id(p), n)
    return names


def raw_groups(model: nn.Module, paramwise_cfg: dict, optimizer: dict = SGD_CFG, cls=None):
    """[(param name, group without 'params')] exactly as the constructor makes them."""
    cls = cls or DefaultOptimWrapperConstructor
    constructor = cls(dict(optimizer=optimizer), paramwise_cfg)
    params: list[dict] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        constructor.add_params(params, model)
    names = names_of(model)
    return [
        (names[id(g["params"][0])], {k: v for k, v in g.items() if k != "params"}) for g in params
    ]


def approx_groups(expected):
    return [
        (n, {k: pytest.approx(v) if isinstance(v, float) else v for k, v in g.items()})
        for n, g in expected
    ]


# --------------------------------------------------------------------------- golden tables
def test_golden_brief_combo():
    cfg = dict(
        custom_keys={
            "head": dict(lr_mult=10.0),
            "backbone.conv": dict(lr_mult=0.1, decay_mult=0.5),
        },
        bias_lr_mult=2.0,
        norm_decay_mult=0.0,
        dwconv_decay_mult=0.1,
    )
    conv = {"lr": 0.001, "weight_decay": 5e-05, "lr_mult": 0.1, "decay_mult": 0.5}
    head = {"lr": 0.1, "weight_decay": 0.0001, "lr_mult": 10.0}
    expected = [
        ("pos_embed", {}),
        ("scale", {}),
        ("backbone.conv.weight", conv),
        ("backbone.conv.bias", conv),
        ("backbone.bn.weight", {"weight_decay": 0.0}),
        ("backbone.bn.bias", {"weight_decay": 0.0}),
        ("backbone.dwconv.weight", {"weight_decay": 1e-05}),
        ("backbone.dwconv.bias", {"lr": 0.02, "weight_decay": 1e-05}),
        ("backbone.gn.weight", {"weight_decay": 0.0}),
        ("backbone.gn.bias", {"weight_decay": 0.0}),
        ("backbone.ln.weight", {"weight_decay": 0.0}),
        ("backbone.ln.bias", {"weight_decay": 0.0}),
        ("neck.weight", {}),
        ("neck.bias", {"lr": 0.02}),
        ("head.weight", head),
        ("head.bias", head),
        ("frozen.bias", {"lr": 0.02}),
    ]
    assert raw_groups(GoldenNet(), cfg) == approx_groups(expected)


def test_golden_bias_lr_bias_decay_norm_dwconv():
    cfg = dict(bias_lr_mult=2.0, bias_decay_mult=0.3, norm_decay_mult=0.0, dwconv_decay_mult=0.5)
    bias = {"lr": 0.02, "weight_decay": 3e-05}
    norm = {"weight_decay": 0.0}
    expected = [
        ("pos_embed", {}),
        ("scale", {}),
        ("backbone.conv.weight", {}),
        ("backbone.conv.bias", bias),
        ("backbone.bn.weight", norm),
        ("backbone.bn.bias", norm),
        ("backbone.dwconv.weight", {"weight_decay": 5e-05}),
        ("backbone.dwconv.bias", bias),  # the code (not the docstring): bias rule before dwconv
        ("backbone.gn.weight", norm),
        ("backbone.gn.bias", norm),
        ("backbone.ln.weight", norm),
        ("backbone.ln.bias", norm),
        ("neck.weight", {}),
        ("neck.bias", bias),
        ("head.weight", {}),
        ("head.bias", bias),
        ("frozen.bias", bias),
    ]
    assert raw_groups(GoldenNet(), cfg) == approx_groups(expected)
    # without bias_decay_mult a depthwise conv's bias gets dwconv_decay_mult
    groups = dict(raw_groups(GoldenNet(), dict(dwconv_decay_mult=0.5)))
    assert groups["backbone.dwconv.bias"] == {"weight_decay": pytest.approx(5e-05)}


def test_flat_decay_mult_catches_remaining_1d_params():
    groups = dict(raw_groups(GoldenNet(), dict(flat_decay_mult=0.0, norm_decay_mult=0.5)))
    assert groups["pos_embed"] == {}  # 3-D
    assert groups["scale"] == {"weight_decay": 0.0}  # top-level 1-D
    assert groups["backbone.conv.bias"] == {"weight_decay": 0.0}
    assert groups["backbone.conv.weight"] == {}
    assert groups["backbone.bn.weight"] == {"weight_decay": pytest.approx(5e-05)}  # norm first
    # flat_decay_mult needs no weight_decay check: ignored without one
    groups = dict(raw_groups(GoldenNet(), dict(flat_decay_mult=0.0), dict(type="SGD", lr=0.1)))
    assert all(g == {} for g in groups.values())


def test_custom_keys_longest_then_alphabetical_and_exclusive():
    groups = dict(
        raw_groups(
            GoldenNet(), dict(custom_keys={"bone": dict(lr_mult=4.0), "back": dict(lr_mult=3.0)})
        )
    )
    assert groups["backbone.conv.weight"] == {
        "lr": pytest.approx(0.03),
        "weight_decay": 0.0001,
        "lr_mult": 3.0,
    }
    groups = dict(
        raw_groups(
            GoldenNet(),
            dict(
                custom_keys={"backbone": dict(lr_mult=2.0), "backbone.bn": dict(lr_mult=0.5)},
                norm_decay_mult=0.0,
            ),
        )
    )
    # the longer key wins; a custom key disables the other rules (no norm_decay_mult here)
    assert groups["backbone.bn.weight"] == {"lr": 0.005, "weight_decay": 0.0001, "lr_mult": 0.5}
    assert groups["backbone.gn.weight"] == {"lr": 0.02, "weight_decay": 0.0001, "lr_mult": 2.0}
    # top-level params are matched as '.name'
    groups = dict(raw_groups(GoldenNet(), dict(custom_keys={".pos_embed": dict(decay_mult=0.0)})))
    assert groups["pos_embed"] == {"lr": 0.01, "weight_decay": 0.0, "decay_mult": 0.0}
    assert groups["scale"] == {}


def test_custom_keys_extra_keys_reach_the_group():
    cfg = dict(custom_keys={"head": dict(lr_mult=10.0, lars_exclude=True, foo="bar")})
    groups = dict(raw_groups(GoldenNet(), cfg))
    assert groups["head.bias"] == {
        "lr": pytest.approx(0.1),
        "weight_decay": 0.0001,
        "lr_mult": 10.0,
        "lars_exclude": True,
        "foo": "bar",
    }
    # without weight_decay, lr_mult still works
    groups = dict(
        raw_groups(
            GoldenNet(), dict(custom_keys={"head": dict(lr_mult=2.0)}), dict(type="SGD", lr=0.1)
        )
    )
    assert groups["head.weight"] == {"lr": 0.2, "lr_mult": 2.0}


def test_dcn_offset_lr_mult():
    class DeformConv2d(nn.Module):  # stands for mmcv.ops.DeformConv2d (matched by name)
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(4, 4, 3, 3))
            self.conv_offset = nn.Conv2d(4, 18, 3)

    model = nn.Module()
    model.dcn = DeformConv2d()
    cfg = dict(dcn_offset_lr_mult=0.1, bias_lr_mult=2.0, bias_decay_mult=0.5, flat_decay_mult=0.0)
    groups = dict(raw_groups(model, cfg))
    assert groups["dcn.weight"] == {}
    # offset conv: dcn lr for weight and bias; bias/flat rules do not apply inside a DCN
    assert groups["dcn.conv_offset.weight"] == {"lr": pytest.approx(0.001)}
    assert groups["dcn.conv_offset.bias"] == {"lr": pytest.approx(0.001)}


# --------------------------------------------------------------------------- building
def test_no_paramwise_cfg_is_one_group_with_all_params():
    model = TiedNet()
    for paramwise in (None, {}):
        wrapper = build_optim_wrapper(model, dict(optimizer=SGD_CFG, paramwise_cfg=paramwise))
        assert isinstance(wrapper, OptimWrapper)
        (group,) = wrapper.optimizer.param_groups
        assert len(group["params"]) == len(list(model.parameters()))  # frozen ones included
        assert group["lr"] == 0.01 and group["weight_decay"] == 1e-4


def test_build_full_model_groups_and_wrapper_arguments():
    model = TiedNet()
    cfg = dict(
        type="OptimWrapper",
        optimizer=SGD_CFG,
        paramwise_cfg=dict(norm_decay_mult=0.0, bypass_duplicate=True),
        clip_grad=dict(max_norm=1.0),
        accumulative_counts=2,
    )
    original = copy.deepcopy(cfg)
    with pytest.warns(UserWarning) as record:
        wrapper = build_optim_wrapper(model, cfg)
    assert cfg == original  # the caller's config is not modified
    messages = [str(w.message) for w in record]
    assert any(
        m.startswith(
            "tied_b.weight is duplicate (the same tensor as tied_a.weight). It is skipped since bypass_duplicate=True"
        )
        for m in messages
    )
    frozen = [m for m in messages if "requires_grad=False" in m]
    assert frozen == [
        "frozen.weight, frozen_block.0.weight, frozen_block.0.bias, frozen_block.1.weight, "
        "frozen_block.1.bias are skipped since their requires_grad=False"
    ]
    assert record[0].filename == __file__  # the warning points at the caller
    names = names_of(model)
    grouped = [names[id(g["params"][0])] for g in wrapper.optimizer.param_groups]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert grouped == trainable  # DFS order; the tied weight once
    assert wrapper._accumulative_counts == 2


def test_built_optimizer_is_wrapped_as_is():
    model = GoldenNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    wrapper = build_optim_wrapper(model, dict(optimizer=optimizer, clip_grad=dict(max_norm=1.0)))
    assert isinstance(wrapper, OptimWrapper) and wrapper.optimizer is optimizer
    with pytest.raises(ValueError, match="paramwise_cfg needs an optimizer config"):
        build_optim_wrapper(model, dict(optimizer=optimizer, paramwise_cfg=dict(bias_lr_mult=2.0)))


def test_tied_weights_without_bypass_name_both_params():
    cfg = dict(optimizer=SGD_CFG, paramwise_cfg=dict(bias_lr_mult=2.0))
    with (
        pytest.raises(ValueError) as exc,
        pytest.warns(UserWarning, match="frozen.weight is skipped"),
    ):
        build_optim_wrapper(TiedNet(), cfg)
    msg = str(exc.value)
    assert "tied_b.weight is the same tensor as tied_a.weight" in msg
    assert "bypass_duplicate=True" in msg


def test_wrapped_model_is_unwrapped():
    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = GoldenNet()
    cfg = dict(optimizer=SGD_CFG, paramwise_cfg=dict(norm_decay_mult=0.0))
    with pytest.warns(
        UserWarning, match="^frozen.weight is skipped since its requires_grad=False$"
    ):
        wrapper = build_optim_wrapper(Wrapper(model), cfg)
    assert len(wrapper.optimizer.param_groups) == 17  # golden g2: frozen.weight skipped
    names = names_of(model)
    assert names[id(wrapper.optimizer.param_groups[4]["params"][0])] == "backbone.bn.weight"


def test_validation_errors():
    with pytest.raises(
        TypeError, match="paramwise_cfg should be None or a dict, but got <class 'list'>"
    ):
        DefaultOptimWrapperConstructor(dict(optimizer=SGD_CFG), [1])
    with pytest.raises(TypeError, match="If specified, custom_keys must be a dict"):
        DefaultOptimWrapperConstructor(dict(optimizer=SGD_CFG), dict(custom_keys=[1]))
    no_wd = dict(type="SGD", lr=0.1)
    with pytest.raises(
        ValueError,
        match=r"base_wd should not be None: custom_keys\['head'\] sets decay_mult .* \(in key "
        r"optim_wrapper.paramwise_cfg.custom_keys\['head'\]\)",
    ):
        DefaultOptimWrapperConstructor(
            dict(optimizer=no_wd), dict(custom_keys={"head": dict(decay_mult=0.0)})
        )
    for key in ("bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult"):
        with pytest.raises(
            ValueError,
            match=f"base_wd should not be None: {key} .* key optim_wrapper.paramwise_cfg.{key}",
        ):
            DefaultOptimWrapperConstructor(dict(optimizer=no_wd), {key: 0.0})
    DefaultOptimWrapperConstructor(
        dict(optimizer=no_wd), dict(flat_decay_mult=0.0, bias_lr_mult=2.0)
    )
    with pytest.raises(TypeError, match="optimizer_cfg should be a dict"):
        DefaultOptimWrapperConstructor([1])
    with pytest.raises(AssertionError, match='must contain "optimizer" config'):
        DefaultOptimWrapperConstructor(dict(type="OptimWrapper"))


def test_unknown_types_and_bad_keywords_name_registry_key_and_file(tmp_path):
    path = tmp_path / "cfg.py"
    path.write_text(
        "optim_wrapper = dict(optimizer=dict(type='FusedAdamWW', lr=0.1, weight_decay=0.0),"
        " paramwise_cfg=dict(norm_decay_mult=0.0))\n"
        "bad_constructor = dict(constructor='NoSuchConstructor', optimizer=dict(type='SGD', lr=0.1))\n"
        "bad_wrapper = dict(type='OptimWraper', optimizer=dict(type='SGD', lr=0.1))\n"
        "bad_kwarg = dict(optimizer=dict(type='FusedSGD', lr=0.1, betas=(0.9, 0.99)))\n"
    )
    cfg = Config.fromfile(path)
    model = GoldenNet()
    with pytest.raises(UnknownTypeError) as exc:
        build_optim_wrapper(model, cfg.optim_wrapper)
    msg = str(exc.value)
    assert msg.startswith("FusedAdamWW is not in the fastopt::optimizer registry")
    assert (
        f"config file {path}, key optim_wrapper.optimizer.type" in msg
        and "Did you mean FusedAdamW" in msg
    )
    with pytest.raises(
        UnknownTypeError,
        match="NoSuchConstructor is not in the fastopt::optimizer wrapper constructor registry",
    ) as exc:
        build_optim_wrapper(model, cfg.bad_constructor)
    assert "key bad_constructor.constructor" in str(exc.value)
    with pytest.raises(UnknownTypeError, match="Did you mean OptimWrapper") as exc:
        build_optim_wrapper(model, cfg.bad_wrapper)
    assert "key bad_wrapper.type" in str(exc.value)
    with pytest.raises(TypeError) as exc:
        build_optim_wrapper(model, cfg.bad_kwarg)
    assert "FusedSGD" in str(exc.value) and "unexpected keyword 'betas'" in str(exc.value)
    assert "key bad_kwarg.optimizer" in str(exc.value)


def test_constructor_registered_and_custom_constructor():
    assert (
        OPTIM_WRAPPER_CONSTRUCTORS.get("DefaultOptimWrapperConstructor")
        is DefaultOptimWrapperConstructor
    )
    assert (
        OPTIM_WRAPPER_CONSTRUCTORS.get("LearningRateDecayOptimWrapperConstructor")
        is LearningRateDecayOptimWrapperConstructor
    )
    assert fastopt.build_optim_wrapper is build_optim_wrapper
    assert fastopt.DefaultOptimWrapperConstructor is DefaultOptimWrapperConstructor


# --------------------------------------------------------------------------- fused optimizers
def test_fused_optimizer_steps_all_groups_in_one_engine_call(monkeypatch):
    torch.manual_seed(0)
    model = TiedNet()
    reference = copy.deepcopy(model)
    cfg = dict(
        optimizer=dict(type="FusedSGD", lr=0.01, momentum=0.9, weight_decay=1e-4),
        paramwise_cfg=dict(
            custom_keys={"head": dict(lr_mult=10.0)},
            bias_lr_mult=2.0,
            norm_decay_mult=0.0,
            dwconv_decay_mult=0.1,
            bypass_duplicate=True,
        ),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fused = build_optim_wrapper(model, cfg)
        torch_cfg = copy.deepcopy(cfg)
        torch_cfg["optimizer"]["type"] = "SGD"
        plain = build_optim_wrapper(reference, torch_cfg)
    assert isinstance(fused.optimizer, FusedSGD)
    n_groups = len(fused.optimizer.param_groups)
    assert n_groups == len([p for p in model.parameters() if p.requires_grad]) == 20

    runs: list[int] = []
    original = FusedOptimizer._current_plan

    class CountingEngine:
        def __init__(self, engine) -> None:
            self._engine = engine

        def run(self, *args, **kwargs):
            runs.append(self._engine.num_entries)
            return self._engine.run(*args, **kwargs)

        def __getattr__(self, name):
            return getattr(self._engine, name)

    def counting_plan(self):
        plan = original(self)
        if not isinstance(plan.engine, CountingEngine):
            plan.engine = CountingEngine(plan.engine)
        return plan

    monkeypatch.setattr(FusedOptimizer, "_current_plan", counting_plan)
    x = torch.randn(2, 3, 8, 8)
    for step in range(3):
        for m, w in ((model, fused), (reference, plain)):
            m(x).backward()
            w.step()
            w.zero_grad()
        assert runs == [n_groups] * (step + 1)  # one engine call, every param of every group
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_lars_alias_with_lars_exclude():
    model = GoldenNet()
    keys = {
        "bn": dict(decay_mult=0, lars_exclude=True),
        "bias": dict(decay_mult=0, lars_exclude=True),
    }
    cfg = dict(
        optimizer=dict(type="LARS", lr=0.3, momentum=0.9, weight_decay=1e-6),
        paramwise_cfg=dict(custom_keys=keys),
    )
    with pytest.warns(UserWarning, match="frozen.weight is skipped"):
        wrapper = build_optim_wrapper(model, cfg)
    assert isinstance(wrapper.optimizer, FusedLARS)
    names = names_of(model)
    excluded = {
        names[id(g["params"][0])]: g["weight_decay"]
        for g in wrapper.optimizer.param_groups
        if g.get("lars_exclude")
    }
    biases = {n for n in names.values() if n.endswith(".bias")}
    assert excluded == dict.fromkeys(biases | {"backbone.bn.weight"}, 0.0)


# --------------------------------------------------------------------------- layer-wise lr decay
class TinyViT(nn.Module):
    """mmpretrain ViT parameter names: backbone.{cls_token,pos_embed,patch_embed,layers.N,ln1}."""

    def __init__(self, depth: int = 3, own_method: bool = False) -> None:
        super().__init__()
        self.backbone = nn.Module()
        self.backbone.cls_token = nn.Parameter(torch.zeros(1, 1, 8))
        self.backbone.pos_embed = nn.Parameter(torch.zeros(1, 5, 8))
        self.backbone.patch_embed = nn.Module()
        self.backbone.patch_embed.projection = nn.Conv2d(3, 8, 2, 2)
        self.backbone.layers = nn.ModuleList(
            nn.ModuleDict(dict(ln1=nn.LayerNorm(8), attn=nn.Linear(8, 8))) for _ in range(depth)
        )
        self.backbone.ln1 = nn.LayerNorm(8)
        self.head = nn.Module()
        self.head.fc = nn.Linear(8, 4)
        self.depth = depth
        if own_method:
            self.get_layer_depth = self._mmpretrain_layer_depth

    def _mmpretrain_layer_depth(self, param_name: str, prefix: str = "backbone."):
        # mmpretrain VisionTransformer.get_layer_depth, as ImageClassifier calls it
        num_layers = self.depth + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix) :]
        if name in ("cls_token", "pos_embed") or name.startswith("patch_embed"):
            return 0, num_layers
        if name.startswith("layers"):
            return int(name.split(".")[1]) + 1, num_layers
        return num_layers - 1, num_layers


def test_layer_decay_groups_golden():
    rate, lr, wd = 0.5, 1e-3, 0.05
    cfg = dict(
        layer_decay_rate=rate,
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={".cls_token": dict(decay_mult=0.0)},
    )
    optimizer = dict(type="AdamW", lr=lr, weight_decay=wd)
    groups = raw_groups(
        TinyViT(own_method=True), cfg, optimizer, LearningRateDecayOptimWrapperConstructor
    )
    by_name = dict(groups)

    # depth: embeddings 0, layers.i -> i+1, ln1/head -> 4; num_layers 5
    def expect(layer_id: int, weight_decay: float, **extra):
        scale = rate ** (5 - layer_id - 1)
        return {
            "weight_decay": weight_decay,
            **extra,
            "lr": pytest.approx(lr * scale),
            "lr_scale": scale,
            "layer_id": layer_id,
        }

    # '.cls_token' (mmpretrain's usual key) matches 'backbone.cls_token': decay_mult popped
    assert by_name["backbone.cls_token"] == {**expect(0, 0.0), "param_name": "backbone.cls_token"}
    assert by_name["backbone.pos_embed"] == {**expect(0, wd), "param_name": "backbone.pos_embed"}
    assert by_name["backbone.patch_embed.projection.bias"] == {
        **expect(0, 0.0),
        "param_name": "backbone.patch_embed.projection.bias",
    }
    assert by_name["backbone.layers.0.attn.weight"] == {
        **expect(1, wd),
        "param_name": "backbone.layers.0.attn.weight",
    }
    assert by_name["backbone.layers.2.ln1.weight"] == {
        **expect(3, 0.0),
        "param_name": "backbone.layers.2.ln1.weight",
    }
    assert by_name["backbone.ln1.weight"] == {**expect(4, 0.0), "param_name": "backbone.ln1.weight"}
    assert by_name["head.fc.weight"] == {**expect(4, wd), "param_name": "head.fc.weight"}
    # other keys are copied into the group; lr_mult has no effect on the lr
    cfg = dict(layer_decay_rate=rate, custom_keys={"cls_token": dict(decay_mult=0.0, lr_mult=9.0)})
    groups = dict(
        raw_groups(
            TinyViT(own_method=True), cfg, optimizer, LearningRateDecayOptimWrapperConstructor
        )
    )
    assert groups["backbone.cls_token"]["weight_decay"] == 0.0
    assert groups["backbone.cls_token"]["lr"] == pytest.approx(lr * rate**4)
    assert groups["backbone.cls_token"]["lr_mult"] == 9.0


def test_layer_decay_inferred_depth_matches_model_method():
    optimizer = dict(type="AdamW", lr=1e-3, weight_decay=0.05)
    cfg = dict(layer_decay_rate=0.65, flat_decay_mult=0.0)
    own = raw_groups(
        TinyViT(own_method=True), cfg, optimizer, LearningRateDecayOptimWrapperConstructor
    )
    inferred = raw_groups(TinyViT(), cfg, optimizer, LearningRateDecayOptimWrapperConstructor)
    assert own == inferred


def test_infer_layer_depth_timm_convnext_swin():
    timm_vit = [
        "cls_token",
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.norm1.weight",
        "blocks.11.mlp.fc2.bias",
        "norm.weight",
        "head.weight",
    ]
    depth = infer_get_layer_depth(timm_vit)
    assert [depth(n) for n in timm_vit] == [
        (0, 14),
        (0, 14),
        (0, 14),
        (1, 14),
        (12, 14),
        (13, 14),
        (13, 14),
    ]
    # mmpretrain ConvNeXt-T names, depths (3, 3, 9, 3) -> max_layer_id 6
    convnext = [
        f"backbone.stages.{s}.{b}.depthwise_conv.weight"
        for s, n in enumerate((3, 3, 9, 3))
        for b in range(n)
    ]
    convnext += [f"backbone.downsample_layers.{s}.0.weight" for s in range(4)] + [
        "backbone.norm3.weight",
        "head.fc.weight",
    ]
    depth = infer_get_layer_depth(convnext)
    assert depth("backbone.downsample_layers.0.0.weight") == (0, 8)
    assert depth("backbone.downsample_layers.2.0.weight") == (3, 8)
    assert depth("backbone.downsample_layers.3.0.weight") == (6, 8)
    assert depth("backbone.stages.1.2.depthwise_conv.weight") == (2, 8)
    assert depth("backbone.stages.2.8.depthwise_conv.weight") == (5, 8)
    assert depth("backbone.stages.3.0.depthwise_conv.weight") == (6, 8)
    assert depth("backbone.norm3.weight") == (7, 8) and depth("head.fc.weight") == (7, 8)
    # ConvNeXt-B: stage 2 has 27 blocks -> 12 layers
    big = [f"stages.{s}.{b}.x" for s, n in enumerate((3, 3, 27, 3)) for b in range(n)]
    big += [f"downsample_layers.{s}.0.weight" for s in range(4)]
    assert infer_get_layer_depth(big)("stages.2.26.x") == (3 + 26 // 3, 14)
    # Swin depths (2, 2, 6, 2)
    swin = [
        f"backbone.stages.{s}.blocks.{b}.attn.w"
        for s, n in enumerate((2, 2, 6, 2))
        for b in range(n)
    ]
    depth = infer_get_layer_depth(swin + ["backbone.patch_embed.projection.weight"])
    assert depth("backbone.patch_embed.projection.weight") == (0, 14)
    assert depth("backbone.stages.1.blocks.1.attn.w") == (4, 14)
    assert depth("backbone.stages.1.downsample.reduction.weight") == (4, 14)
    assert depth("backbone.stages.3.blocks.1.attn.w") == (12, 14)
    assert depth("head.fc.weight") == (13, 14)


def test_layer_decay_needs_a_depth():
    model = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(NotImplementedError, match="get_layer_depth"):
        build_optim_wrapper(
            model,
            dict(
                constructor="LearningRateDecayOptimWrapperConstructor",
                optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
                paramwise_cfg=dict(layer_decay_rate=0.7),
            ),
        )
    # an explicit function works for any model
    constructor = LearningRateDecayOptimWrapperConstructor(
        dict(optimizer=dict(type="AdamW", lr=1e-3)),
        dict(layer_decay_rate=0.5),
        get_layer_depth=lambda name: (0, 3),
    )
    wrapper = constructor(model)
    assert [g["lr"] for g in wrapper.optimizer.param_groups] == [pytest.approx(2.5e-4)] * 2
    assert all(
        "weight_decay" in g and g["weight_decay"] == 0.01 for g in wrapper.optimizer.param_groups
    )  # AdamW default
    assert math.isclose(wrapper.optimizer.param_groups[0]["lr_scale"], 0.25)


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (  # mmpretrain MixMIM: stages of blocks, no get_layer_depth
            [
                "backbone.patch_embed.projection.weight",
                "backbone.absolute_pos_embed",
                "backbone.layers.0.blocks.0.attn.qkv.weight",
                "backbone.layers.0.blocks.1.attn.qkv.weight",
                "backbone.layers.1.downsample.reduction.weight",
                "backbone.layers.1.blocks.0.attn.qkv.weight",
                "head.fc.weight",
            ],
            "'backbone.layers.0.blocks.0.attn.qkv.weight' has blocks nested in stages",
        ),
        (  # timm Swin
            ["patch_embed.proj.weight", "layers.0.blocks.0.norm1.weight", "head.fc.weight"],
            "'layers.0.blocks.0.norm1.weight' has blocks nested in stages",
        ),
        (  # mmpretrain PVT: layers.N is a list of (patch_embed, blocks, norm)
            ["layers.0.0.projection.weight", "layers.0.1.0.attn.q.weight", "head.fc.weight"],
            "'layers.0.0.projection.weight' has blocks nested in stages",
        ),
        (  # timm ConvNeXt: Swin-like block names, no patch_embed
            ["stem.0.weight", "stages.0.blocks.0.conv_dw.weight", "stages.1.downsample.1.weight"],
            "Swin-style blocks ('stages.0.blocks.0.conv_dw.weight') but no patch_embed",
        ),
        (  # ConvMixer: ConvNeXt-like block names, one stage, no downsample_layers
            ["stem.0.weight", "stages.0.0.fn.0.weight", "stages.1.0.fn.0.weight"],
            "not its layout: four stages (found [0, 1]) and downsample_layers",
        ),
        (  # a text transformer: ViT-like blocks, but the embedding is no ViT stem
            ["embed_tokens.weight", "encoder.layers.0.self_attn.in_proj_weight", "lm_head.weight"],
            "no ViT embedding (cls_token, dist_token, mask_token, pos_embed, reg_token, "
            "patch_embed, embeddings) under 'encoder.'",
        ),
    ],
)
def test_layer_depth_is_not_inferred_from_another_layout(names, fragment):
    with pytest.raises(NotImplementedError) as exc:
        infer_get_layer_depth(names)
    msg = str(exc.value)
    assert msg.startswith("Layer-wise lr decay needs each parameter's depth, and it cannot be")
    assert fragment in msg, msg
    assert msg.endswith(
        "Add a get_layer_depth(param_name) -> (layer_id, num_layers) method to the model, or "
        "pass get_layer_depth to LearningRateDecayOptimWrapperConstructor."
    )


def test_vit_blocks_with_indexed_submodules_are_not_nested():
    # mmpretrain's FFN is `ffn.layers.0.0`, HF's blocks are `encoder.layer.N`: still ViT blocks
    names = [
        "backbone.cls_token",
        "backbone.patch_embed.projection.weight",
        "backbone.layers.0.ffn.layers.0.0.weight",
        "backbone.layers.1.ffn.layers.1.weight",
        "head.layers.head.weight",
    ]
    depth = infer_get_layer_depth(names)
    assert [depth(n) for n in names] == [(0, 4), (0, 4), (1, 4), (2, 4), (3, 4)]
    # a bare backbone: the blocks are the leftmost `layers.N.`, not the FFN's `layers.0.`
    bare = [n.removeprefix("backbone.") for n in names[:4]]
    depth = infer_get_layer_depth(bare)
    assert [depth(n) for n in bare] == [(0, 4), (0, 4), (1, 4), (2, 4)]
    hf = ["vit.embeddings.cls_token", "vit.encoder.layer.0.output.dense.weight", "classifier.w"]
    assert [infer_get_layer_depth(hf)(n) for n in hf] == [(0, 3), (1, 3), (2, 3)]


def test_layer_decay_refuses_mixmim_names_through_the_constructor():
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.patch_embed = nn.Conv2d(3, 4, 2)
    model.backbone.layers = nn.ModuleList(
        nn.ModuleDict(dict(blocks=nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])))
        for _ in range(2)
    )
    cfg = dict(
        constructor="LearningRateDecayOptimWrapperConstructor",
        optimizer=dict(type="AdamW", lr=1e-3, weight_decay=0.05),
        paramwise_cfg=dict(layer_decay_rate=0.7),
    )
    with pytest.raises(NotImplementedError, match="blocks nested in stages"):
        build_optim_wrapper(model, cfg)
    # with the model's own method it builds
    model.get_layer_depth = lambda name: (0 if "patch_embed" in name else 1, 2)
    wrapper = build_optim_wrapper(model, cfg)
    assert {g["lr_scale"] for g in wrapper.optimizer.param_groups} == {0.7, 1.0}
