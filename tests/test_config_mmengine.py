"""Configs load exactly as MMEngine loads them (the installed mmengine is the reference).

The real-config cases are small copies of the structure of official mmdet 3.x / mmseg 1.x /
mmpretrain 1.x configs (MMEngine-era configs with leftover MMCV 1.x keys, ``pkg::`` bases).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import textwrap
import warnings
from collections import OrderedDict, defaultdict
from pathlib import Path

import pytest

from fastopt.config import (
    Config,
    ConfigDict,
    LegacyConfigNote,
    LegacyConfigWarning,
    translate_legacy_config,
)

mmengine_config = pytest.importorskip("mmengine.config", reason="MMEngine is the reference")
MMEngineConfig = mmengine_config.Config
MMEngineConfigDict = mmengine_config.ConfigDict


def write_tree(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def load(path: Path, **kwargs) -> tuple[Config, list[warnings.WarningMessage]]:
    """Load with fastopt; return the config and the legacy warnings/notes it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = Config.fromfile(path, **kwargs)
    return cfg, [w for w in caught if issubclass(w.category, LegacyConfigWarning)]


def mmengine_dict(path: Path) -> dict:
    return MMEngineConfig.fromfile(str(path)).to_dict()


# mmdet 3.x `_base_/default_runtime.py` (abridged) and a 2x schedule
MMDET_RUNTIME = """
    default_scope = 'mmdet'
    default_hooks = dict(
        timer=dict(type='IterTimerHook'),
        logger=dict(type='LoggerHook', interval=50),
        param_scheduler=dict(type='ParamSchedulerHook'),
        checkpoint=dict(type='CheckpointHook', interval=1),
        sampler_seed=dict(type='DistSamplerSeedHook'))
    env_cfg = dict(
        cudnn_benchmark=False,
        mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
        dist_cfg=dict(backend='nccl'))
    vis_backends = [dict(type='LocalVisBackend')]
    visualizer = dict(type='DetLocalVisualizer', vis_backends=vis_backends, name='visualizer')
    log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True)
    log_level = 'INFO'
    load_from = None
    resume = False
"""
MMDET_SCHEDULE = """
    train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=24, val_interval=1)
    val_cfg = dict(type='ValLoop')
    test_cfg = dict(type='TestLoop')
    param_scheduler = [
        dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
        dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[16, 22], gamma=0.1)
    ]
    optim_wrapper = dict(
        type='OptimWrapper',
        optimizer=dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001))
"""

# name -> (files, the config to load, the leftover MMCV 1.x keys the note names)
REAL_CONFIGS = {
    # mmdet 3.x ssd300_coco.py: `cudnn_benchmark = True` in _base_/models/ssd300.py clashed
    # with env_cfg.cudnn_benchmark=False
    "mmdet-ssd300": (
        {
            "_base_/models/ssd300.py": """
                input_size = 300
                model = dict(
                    type='SingleStageDetector',
                    backbone=dict(type='SSDVGG', depth=16, out_indices=(3, 4)),
                    bbox_head=dict(type='SSDHead', in_channels=(512, 1024), num_classes=80),
                    train_cfg=dict(assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5)),
                    test_cfg=dict(nms_pre=1000, score_thr=0.02, max_per_img=200))
                cudnn_benchmark = True
            """,
            "_base_/schedules/schedule_2x.py": MMDET_SCHEDULE,
            "_base_/default_runtime.py": MMDET_RUNTIME,
            "ssd/ssd300_coco.py": """
                _base_ = [
                    '../_base_/models/ssd300.py', '../_base_/schedules/schedule_2x.py',
                    '../_base_/default_runtime.py'
                ]
                optim_wrapper = dict(
                    type='OptimWrapper',
                    optimizer=dict(type='SGD', lr=2e-3, momentum=0.9, weight_decay=5e-4))
                custom_hooks = [dict(type='NumClassCheckHook'), dict(type='CheckInvalidLossHook')]
                auto_scale_lr = dict(base_batch_size=64)
            """,
        },
        "ssd/ssd300_coco.py",
        ["cudnn_benchmark"],
    ),
    # mmseg 1.x mobilenet-v3-d8_lraspp_4xb4-320k: a leftover IterBasedRunner next to the
    # identical IterBasedTrainLoop
    "mmseg-lraspp": (
        {
            "_base_/models/lraspp_m-v3-d8.py": """
                norm_cfg = dict(type='SyncBN', eps=0.001, requires_grad=True)
                model = dict(
                    type='EncoderDecoder',
                    backbone=dict(type='MobileNetV3', arch='large', norm_cfg=norm_cfg),
                    decode_head=dict(type='LRASPPHead', in_channels=(16, 24, 960)),
                    train_cfg=dict(),
                    test_cfg=dict(mode='whole'))
            """,
            "_base_/default_runtime.py": """
                default_scope = 'mmseg'
                env_cfg = dict(cudnn_benchmark=True, dist_cfg=dict(backend='nccl'))
                log_processor = dict(by_epoch=False)
                log_level = 'INFO'
                load_from = None
                resume = False
            """,
            "_base_/schedules/schedule_160k.py": """
                optim_wrapper = dict(
                    type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9),
                    clip_grad=None)
                param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0,
                                        end=160000, by_epoch=False)]
                train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
                val_cfg = dict(type='ValLoop')
                test_cfg = dict(type='TestLoop')
                default_hooks = dict(
                    timer=dict(type='IterTimerHook'),
                    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
                    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=16000))
            """,
            "mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py": """
                _base_ = [
                    '../_base_/models/lraspp_m-v3-d8.py', '../_base_/default_runtime.py',
                    '../_base_/schedules/schedule_160k.py'
                ]
                model = dict(pretrained='open-mmlab://contrib/mobilenet_v3_large')
                train_cfg = dict(type='IterBasedTrainLoop', max_iters=320000, val_interval=32000)
                runner = dict(type='IterBasedRunner', max_iters=320000)
            """,
        },
        "mobilenet_v3/mobilenet-v3-d8_lraspp_4xb4-320k_cityscapes-512x1024.py",
        ["runner"],
    ),
    # mmdet 3.x ga-fast-rcnn_r50-caffe_fpn_1x_coco.py: a leftover optimizer_config (with
    # `_delete_`, which MMEngine keeps: the bases have no optimizer_config) gave clipping
    "mmdet-ga-fast-rcnn": (
        {
            "_base_/schedules/schedule_2x.py": MMDET_SCHEDULE,
            "_base_/default_runtime.py": MMDET_RUNTIME,
            "guided_anchoring/ga-fast-rcnn_r50-caffe_fpn_1x_coco.py": """
                _base_ = [
                    '../_base_/schedules/schedule_2x.py', '../_base_/default_runtime.py'
                ]
                model = dict(type='FastRCNN', backbone=dict(type='ResNet', depth=50))
                optimizer_config = dict(
                    _delete_=True, grad_clip=dict(max_norm=35, norm_type=2))
            """,
        },
        "guided_anchoring/ga-fast-rcnn_r50-caffe_fpn_1x_coco.py",
        ["optimizer_config"],
    ),
    # mmseg 1.x mae-base_upernet_8xb2-amp-160k: a leftover `fp16` made it an AmpOptimWrapper
    "mmseg-mae-amp": (
        {
            "_base_/default_runtime.py": """
                default_scope = 'mmseg'
                env_cfg = dict(cudnn_benchmark=True)
                resume = False
            """,
            "mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py": """
                _base_ = ['../_base_/default_runtime.py']
                optim_wrapper = dict(
                    _delete_=True,
                    type='OptimWrapper',
                    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
                    paramwise_cfg=dict(num_layers=12, layer_decay_rate=0.65),
                    constructor='LayerDecayOptimizerConstructor')
                # mixed precision
                fp16 = dict(loss_scale='dynamic')
                optimizer = dict(type='AdamW', lr=1e-4)
            """,
        },
        "mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py",
        ["fp16"],  # `optimizer` next to `optim_wrapper` is a helper variable: not reported
    ),
    # siblings: every MMCV 1.x key left in an MMEngine config
    "every-leftover-key": (
        {
            "_base_/default_runtime.py": MMDET_RUNTIME,
            "_base_/schedules/schedule_2x.py": MMDET_SCHEDULE,
            "leftovers.py": """
                _base_ = ['./_base_/schedules/schedule_2x.py', './_base_/default_runtime.py']
                optimizer_config = dict(grad_clip=dict(max_norm=10))
                lr_config = dict(policy='step', step=[8, 11])
                momentum_config = dict(policy='cyclic')
                runner = dict(type='EpochBasedRunner', max_epochs=12)
                total_epochs = 12
                checkpoint_config = dict(interval=2)
                log_config = dict(interval=10, hooks=[dict(type='TextLoggerHook')])
                evaluation = dict(interval=2, metric='bbox', save_best='auto')
                workflow = [('train', 1), ('val', 1)]
                resume_from = 'work_dirs/latest.pth'
                dist_params = dict(backend='gloo')
                mp_start_method = 'spawn'
                opencv_num_threads = 4
                fp16 = dict(loss_scale=512.)
            """,
        },
        "leftovers.py",
        [
            "optimizer_config",
            "fp16",
            "lr_config",
            "momentum_config",
            "runner",
            "total_epochs",
            "checkpoint_config",
            "log_config",
            "evaluation",
            "workflow",
            "resume_from",
            "dist_params",
            "mp_start_method",
            "opencv_num_threads",
        ],
    ),
    # an MMEngine config known by its loop-style train_cfg alone; its `optimizer` is a leftover
    # (MMEngine reads optim_wrapper)
    "train-cfg-only": (
        {
            "only_loop.py": """
                train_cfg = dict(by_epoch=True, max_epochs=3)
                optimizer = dict(type='SGD', lr=0.1)
                lr_config = dict(policy='step', step=[2])
            """,
        },
        "only_loop.py",
        ["optimizer", "lr_config"],
    ),
}


@pytest.mark.parametrize("name", list(REAL_CONFIGS))
def test_leftover_mmcv1x_keys_are_left_as_mmengine_leaves_them(tmp_path, name):
    files, config, leftovers = REAL_CONFIGS[name]
    write_tree(tmp_path, files)
    path = tmp_path / config
    expected = mmengine_dict(path)
    cfg, caught = load(path)
    assert cfg.to_dict() == expected
    assert list(cfg) == list(expected)
    # reported once, as a note naming the file and every leftover key
    assert [w.category for w in caught] == [LegacyConfigNote]
    message = str(caught[0].message)
    prefix = f"config file {path}: MMCV 1.x keys left as they are, unused (as under MMEngine): "
    assert message.startswith(prefix)
    assert re.findall(r"`(\w+)`", message[len(prefix) :].split(";")[0]) == leftovers
    # without translation: the same, and no note
    untranslated, caught = load(path, translate_legacy=False)
    assert untranslated.to_dict() == expected and caught == []
    # translated again (Runner.from_cfg does so): unchanged, and not reported a second time
    with warnings.catch_warnings(record=True) as again:
        warnings.simplefilter("always")
        assert translate_legacy_config(cfg.to_dict(), cfg.filename) == expected
    assert again == []


def test_mmcv1x_config_with_mmengine_data_keys_is_still_translated(tmp_path):
    # MMCV 1.x `data=dict(...)` has no translation: the data keys do not make a config an
    # MMEngine one (the MMCV 1.x example configs use them)
    write_tree(
        tmp_path,
        {
            "legacy.py": """
                train_dataloader = dict(batch_size=2, dataset=dict(type='Toy'))
                val_dataloader = dict(batch_size=2, dataset=dict(type='Toy'))
                val_evaluator = dict(type='Accuracy')
                val_cfg = dict()
                test_cfg = dict()
                optimizer = dict(type='SGD', lr=0.1)
                runner = dict(type='EpochBasedRunner', max_epochs=2)
                cudnn_benchmark = True
            """
        },
    )
    cfg, caught = load(tmp_path / "legacy.py")
    assert cfg.optim_wrapper == {"type": "OptimWrapper", "optimizer": {"type": "SGD", "lr": 0.1}}
    assert cfg.train_cfg == {"type": "EpochBasedTrainLoop", "max_epochs": 2}
    assert cfg.env_cfg == {"cudnn_benchmark": True}
    assert cfg.val_cfg == {} and cfg.test_cfg == {}  # empty loop configs stay where they are
    assert not any(w.category is LegacyConfigNote for w in caught)


# --------------------------------------------------------------------------- pkg:: bases
@pytest.fixture
def fake_package(tmp_path, monkeypatch):
    """An installed 'mmpretrain' with `.mim/configs` (MMEngine's layout for pkg:: bases)."""
    root = tmp_path / "site" / "mmpretrain"
    write_tree(
        root,
        {
            "__init__.py": "",
            ".mim/model-index.yml": "Import: []\n",
            ".mim/configs/_base_/models/vit-base-p16.py": """
                _base_ = './inner.py'
                model = dict(
                    type='ImageClassifier',
                    backbone=dict(type='VisionTransformer', arch='b', img_size=224),
                    head=dict(type='VisionTransformerClsHead', num_classes=1000))
                train_pipeline = [
                    dict(type='LoadImageFromFile'),
                    dict(type='PackInputs', meta=[dict(type='Meta')]),
                ]
                train_dataloader = dict(
                    batch_size=64, dataset=dict(type='ImageNet', pipeline=train_pipeline))
                env_cfg = dict(cudnn_benchmark=False)
                param_scheduler = [
                    dict(type='LinearLR', by_epoch=True, end=5),
                    dict(type='CosineAnnealingLR', _scope_='mmengine', by_epoch=True, begin=5),
                ]
                pairs = (dict(type='A'), [dict(type='B', x=dict(type='C'))])
            """,
            ".mim/configs/_base_/models/inner.py": """
                data_preprocessor = dict(type='ClsDataPreprocessor', mean=[1, 2, 3])
            """,
        },
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # mmengine 0.10.7 finds packages with pkg_resources, gone with setuptools >= 81; the
    # importlib lookup is what its later versions do
    monkeypatch.setattr(
        mmengine_config.config, "is_installed", lambda p: importlib.util.find_spec(p) is not None
    )
    monkeypatch.setattr(
        mmengine_config.config,
        "get_installed_path",
        lambda p: os.path.dirname(importlib.util.find_spec(p).origin),
    )
    yield tmp_path
    sys.modules.pop("mmpretrain", None)


def test_pkg_base_dicts_get_mmengine_scope(fake_package):
    path = fake_package / "vit_finetune.py"
    path.write_text(
        "_base_ = ['mmpretrain::_base_/models/vit-base-p16.py']\n"
        "model = dict(backbone=dict(drop_path_rate=0.1))\n"
        "backbone = _base_.model.backbone\n"
        "head = {{_base_.model.head}}\n"
        "train_dataloader = dict(dataset=dict(_delete_=True, type='Own'))\n"
        "optim_wrapper = dict(optimizer=dict(type='AdamW', lr=1e-3))\n"
    )
    expected = mmengine_dict(path)
    for translate in (False, True):
        cfg = Config.fromfile(path, translate_legacy=translate)
        assert cfg.to_dict() == expected
    # the outermost dicts with a `type` get the package's scope, the dicts nested in them not
    assert cfg.model._scope_ == "mmpretrain" and "_scope_" not in cfg.model.backbone
    assert cfg.data_preprocessor._scope_ == "mmpretrain"  # from the base's own base
    assert [s.get("_scope_") for s in cfg.param_scheduler] == ["mmpretrain", "mmengine"]
    assert cfg.train_dataloader.dataset == {"type": "Own"}  # replaced by the child
    assert "_scope_" not in cfg.backbone and "_scope_" not in cfg.head  # nested in model
    assert "_scope_" not in cfg.optim_wrapper  # the child's own dicts have no scope


# --------------------------------------------------------------------------- ConfigDict
class UserDict(dict):
    pass


class UserList(list):
    pass


def test_config_dict_keeps_dict_subclasses_as_mmengine():
    values = dict(
        ordered=OrderedDict(x=1),
        default=defaultdict(int, y=2),
        user=UserDict(z=dict(q=1)),
        nested=[dict(k=1), (dict(t=1),)],
        user_list=UserList([dict(m=1)]),
        plain={"inner": UserDict()},
    )
    ours, theirs = ConfigDict(values), MMEngineConfigDict(values)

    def types(value):
        if isinstance(value, dict):
            return (type(value).__name__, {k: types(v) for k, v in dict.items(value)})
        if isinstance(value, (list, tuple)):
            return (type(value).__name__, [types(v) for v in value])
        return type(value).__name__

    assert types(ours) == types(theirs)
    assert type(ours["user"]) is UserDict and type(ours["user"]["z"]) is dict
    assert type(ours["ordered"]) is ConfigDict and type(ours["user_list"]) is UserList
    assert types(ours.to_dict()) == types(theirs.to_dict())  # to_dict: every dict plain
    # assignment and update keep them too; Config does the same
    ours.a, ours["b"] = UserDict(a=1), defaultdict(list)
    ours.update(c=UserDict(), d=dict(e=1))
    assert [type(ours[k]) for k in "abcd"] == [UserDict, defaultdict, UserDict, ConfigDict]
    assert type(Config(dict(u=UserDict(z=1)))._cfg_dict["u"]) is UserDict


# --------------------------------------------------------------------------- tools
def test_diff_matches_mmengine_lines(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("x = 1\nmodel = dict(depth=50, norm=dict(type='BN'))\n")
    b.write_text("x = 1\nmodel = dict(depth=101, norm=dict(type='BN'))\ny = 'new'\n")
    ours = Config.diff(str(a), Config.fromfile(b))

    def changes(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if line.startswith(("+", "-")) and not line.startswith(("---", "+++"))
        ]

    theirs = MMEngineConfig.diff(str(a), str(b))
    assert (
        changes(ours)
        == changes(theirs)
        == [
            "-model = dict(depth=50, norm=dict(type='BN'))",
            "+model = dict(depth=101, norm=dict(type='BN'))",
            "+y = 'new'",
        ]
    )
    assert ours.startswith(f"--- {a}\n+++ {b}\n")
    assert Config.diff(str(a), str(a)) == ""


def test_auto_argparser_matches_mmengine(tmp_path, monkeypatch):
    path = tmp_path / "cfg.py"
    path.write_text(
        "lr = 0.1\nepochs = 12\nname = 'run'\namp = False\n"
        "model = dict(depth=50, widths=[64, 128], norm=dict(type='BN'), extra=None)\n"
        "empty = []\nscales = (1.0, 2.0)\nmixed = [1, 'a']\n"
    )
    argv = [str(path), "--lr", "0.5", "--model.depth", "101", "--model.widths", "8", "16"]
    monkeypatch.setattr(sys, "argv", ["prog", *argv, "--model.norm.type", "GN"])
    parser, cfg = Config.auto_argparser()
    assert cfg.model.depth == 50
    args = vars(parser.parse_args())
    # MMEngine's own parser fails on the empty list: compare on a config without it
    path.write_text(path.read_text().replace("empty = []\n", ""))
    mm_parser, _ = MMEngineConfig.auto_argparser()
    theirs = vars(mm_parser.parse_args())
    # no option for a list of mixed types (MMEngine: the type of the first item)
    assert set(theirs) - set(args) == {"mixed"} and set(args) <= set(theirs)
    for key, value in args.items():
        if key != "amp":  # MMEngine: store_true, so an unset bool reads False; here None
            assert value == theirs[key], key
    assert args["lr"] == 0.5 and args["model.depth"] == 101 and args["model.widths"] == [8, 16]
    assert args["model.norm.type"] == "GN" and args["amp"] is None and args["scales"] is None
    assert "empty" not in args and "mixed" not in args and "model.extra" not in args
    assert vars(parser.parse_args([str(path), "--amp"]))["amp"] is True
    assert vars(parser.parse_args([str(path), "--no-amp"]))["amp"] is False
    # what was given, ready for merge_from_dict
    given = {k: v for k, v in args.items() if v is not None and k != "config"}
    cfg.merge_from_dict(given)
    assert cfg.lr == 0.5 and cfg.model.widths == [8, 16] and cfg.model.norm.type == "GN"
    parser, _ = Config.auto_argparser(args=[str(path), "--epochs", "3"])
    assert parser.parse_args([str(path), "--epochs", "3"]).epochs == 3
