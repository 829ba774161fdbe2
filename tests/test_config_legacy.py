"""MMCV 1.x configs load: legacy keys become the MMEngine vocabulary, with one warning each."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from fastopt.config import (
    Config,
    ConfigDict,
    LegacyConfigError,
    LegacyConfigNote,
    LegacyConfigWarning,
    translate_legacy_config,
)
from fastopt.registry import OPTIMIZERS, PARAM_SCHEDULERS
from fastopt.scheduler.legacy import translate_legacy_schedules

LEGACY = Path(__file__).parent / "data" / "configs" / "legacy"


def load(path: Path) -> tuple[Config, list[str]]:
    """Load a config, returning it and the legacy warnings it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = Config.fromfile(path)
    return cfg, [str(w.message) for w in caught if issubclass(w.category, LegacyConfigWarning)]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "legacy_cfg.py"
    path.write_text(text)
    return path


def test_mmdet_style_config(tmp_path):
    cfg, messages = load(LEGACY / "mmdet_style.py")
    assert cfg.optim_wrapper == {
        "type": "AmpOptimWrapper",
        "optimizer": {"type": "SGD", "lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001},
        "paramwise_cfg": {"norm_decay_mult": 0.0, "custom_keys": {"backbone": {"lr_mult": 0.1}}},
        "clip_grad": {"max_norm": 35, "norm_type": 2},
        "loss_scale": 512.0,  # an int would be rejected by AmpOptimWrapper
    }
    assert isinstance(cfg.optim_wrapper.loss_scale, float)
    assert cfg.param_scheduler == translate_legacy_schedules(
        dict(policy="step", warmup="linear", warmup_iters=500, warmup_ratio=0.001, step=[8, 11]),
        None,
    )
    assert cfg.train_cfg == {"type": "EpochBasedTrainLoop", "max_epochs": 12, "val_interval": 2}
    assert cfg.val_cfg == {"type": "ValLoop"}
    assert cfg.default_hooks == {
        "checkpoint": {"type": "CheckpointHook", "interval": 1, "save_best": "auto"},
        "logger": {"type": "LoggerHook", "interval": 50},
    }
    assert cfg.visualizer == {
        "type": "Visualizer",
        "vis_backends": [{"type": "LocalVisBackend"}, {"type": "TensorboardVisBackend"}],
    }
    assert cfg.env_cfg == {
        "dist_cfg": {"backend": "nccl"},
        "mp_cfg": {"mp_start_method": "fork", "opencv_num_threads": 0},
    }
    assert cfg.log_level == "INFO" and cfg.load_from is None and "resume" not in cfg
    for old in [
        "optimizer",
        "optimizer_config",
        "fp16",
        "lr_config",
        "runner",
        "checkpoint_config",
        "log_config",
        "evaluation",
        "workflow",
        "resume_from",
        "dist_params",
        "mp_start_method",
        "opencv_num_threads",
    ]:
        assert old not in cfg
        # reported exactly once, naming the file, the old and the new key
        hits = [m for m in messages if f"MMCV 1.x key `{old}` was translated to" in m]
        assert len(hits) == 1, (old, messages)
        assert str(LEGACY / "mmdet_style.py") in hits[0]
    assert len(messages) == 13
    assert any(
        "`fp16` was translated to `optim_wrapper.type='AmpOptimWrapper'" in m for m in messages
    )
    assert any("not translated: metric" in m and "val_evaluator" in m for m in messages)
    # the translated config dumps and loads back without warnings
    out = tmp_path / "dumped.py"
    cfg.dump(out)
    again, messages = load(out)
    assert again == cfg and messages == []


def test_iteration_based_selfsup_config():
    cfg, messages = load(LEGACY / "selfsup_iter.py")
    assert cfg.optim_wrapper == {
        "type": "OptimWrapper",
        "optimizer": {"type": "LARS", "lr": 0.3, "momentum": 0.9, "weight_decay": 1e-6},
        "paramwise_cfg": {"custom_keys": {"bn": {"decay_mult": 0, "lars_exclude": True}}},
        "clip_grad": {"max_norm": 10},
        "accumulative_counts": 4,
    }
    assert [s["type"] for s in cfg.param_scheduler] == [
        "LegacyLRScheduler",
        "LegacyMomentumScheduler",
    ]
    assert cfg.train_cfg == {"type": "IterBasedTrainLoop", "max_iters": 1000, "val_interval": 200}
    assert cfg.val_cfg == {"type": "ValLoop"}
    assert cfg.default_hooks.checkpoint == {
        "type": "CheckpointHook",
        "interval": 200,
        "by_epoch": False,
        "max_keep_ckpts": 3,
    }
    assert any("ignored create_symlink" in m for m in messages)
    assert any("`momentum_config` was translated to `param_scheduler`" in m for m in messages)


def test_translated_poly_schedule_matches_mmcv_golden():
    cfg, _ = load(LEGACY / "poly_warmup.py")
    assert cfg.train_cfg == {"type": "EpochBasedTrainLoop", "max_epochs": 4}
    model = torch.nn.Linear(2, 2)
    optimizer = OPTIMIZERS.build(
        cfg.optim_wrapper.optimizer, default_args=dict(params=model.parameters())
    )
    entry = dict(cfg.param_scheduler[0])
    entry.setdefault("end", 4 * 5)  # the runner's default: max_iters for by_epoch=False
    scheduler = PARAM_SCHEDULERS.build(
        entry, default_args=dict(optimizer=optimizer, epoch_length=5)
    )
    lrs = []
    for _ in range(7):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step()
    # mmcv v1.7.2 golden g7
    golden = [
        0.001,
        0.0026749423,
        0.0041880114,
        0.0055378413,
        0.0067229473,
        0.0077417061,
        0.0072816367,
    ]
    assert lrs == pytest.approx(golden, abs=1e-10)


def test_mmengine_config_with_optimizer_variable_is_untouched(tmp_path):
    path = write(
        tmp_path,
        "optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0001)\n"
        "optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer)\n",
    )
    cfg, messages = load(path)
    assert messages == []
    assert cfg.optimizer == cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == "OptimWrapper"


def test_leftover_keys_of_an_mmengine_config_are_left_alone(tmp_path):
    # once a config has MMEngine keys, MMCV 1.x keys in it are never translated (MMEngine
    # ignores them): no clipping from optimizer_config, no second schedule, ...
    text = (
        "optimizer = dict(type='SGD', lr=0.1)\n"
        "optim_wrapper = dict(optimizer=optimizer, clip_grad=dict(max_norm=2))\n"
        "optimizer_config = dict(grad_clip=dict(max_norm=1))\n"
        "param_scheduler = [dict(type='ConstantLR')]\n"
        "lr_config = dict(policy='step', step=[1])\n"
        "default_hooks = dict(checkpoint=dict(type='CheckpointHook'))\n"
        "checkpoint_config = dict(interval=1)\n"
        "cudnn_benchmark = True\n"
    )
    path = write(tmp_path, text)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = Config.fromfile(path)
    assert cfg == Config.fromfile(path, translate_legacy=False)
    assert cfg.optimizer_config == {"grad_clip": {"max_norm": 1}} and cfg.cudnn_benchmark
    assert [w.category for w in caught] == [LegacyConfigNote]
    assert (
        "`optimizer_config`, `lr_config`, `checkpoint_config`, `cudnn_benchmark`; the config is "
        "an MMEngine config (it has `optim_wrapper`, `param_scheduler`, `default_hooks`)"
    ) in str(caught[0].message)


def test_translation_does_not_modify_input():
    original = {
        "optimizer": {"type": "SGD", "lr": 0.1, "paramwise_cfg": {"bias_lr_mult": 2.0}},
        "optimizer_config": {"grad_clip": {"max_norm": 1}},
    }
    with pytest.warns(LegacyConfigWarning):
        out = translate_legacy_config(original)
    assert original["optimizer"]["paramwise_cfg"] == {"bias_lr_mult": 2.0}
    assert isinstance(out, ConfigDict)
    assert out.optim_wrapper.paramwise_cfg == {"bias_lr_mult": 2.0}
    assert out.optim_wrapper.clip_grad == {"max_norm": 1}


def test_translate_legacy_can_be_switched_off(tmp_path):
    path = write(tmp_path, "optimizer = dict(type='SGD', lr=0.1)\ntotal_epochs = 3\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = Config.fromfile(path, translate_legacy=False)
    assert cfg.to_dict() == {"optimizer": {"type": "SGD", "lr": 0.1}, "total_epochs": 3}


def test_iter_based_runner_defaults_by_epoch_false(tmp_path):
    # mmseg 0.x schedule_160k style; mmcv's IterBasedRunner defaults by_epoch=False for the
    # lr, checkpoint and logger hooks, and mmseg's EvalHook evaluates by iteration
    path = write(
        tmp_path,
        "optimizer = dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005)\n"
        "lr_config = dict(policy='poly', power=0.9, min_lr=1e-4)\n"
        "runner = dict(type='IterBasedRunner', max_iters=160000)\n"
        "checkpoint_config = dict(interval=16000)\n"
        "log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook')])\n"
        "evaluation = dict(interval=16000, metric='mIoU', pre_eval=True)\n",
    )
    cfg, messages = load(path)
    assert cfg.train_cfg == {
        "type": "IterBasedTrainLoop",
        "max_iters": 160000,
        "val_interval": 16000,
    }
    assert cfg.default_hooks.checkpoint == {
        "type": "CheckpointHook",
        "interval": 16000,
        "by_epoch": False,
    }
    assert cfg.log_processor == {"by_epoch": False}
    assert cfg.param_scheduler == translate_legacy_schedules(
        dict(policy="poly", power=0.9, min_lr=1e-4, by_epoch=False), None
    )
    assert cfg.param_scheduler[0]["by_epoch"] is False
    assert any("not translated: metric, pre_eval" in m for m in messages)


def test_fp16_optimizer_hook_defaults_and_cumulative_fp16(tmp_path):
    path = write(
        tmp_path,
        "optimizer = dict(type='AdamW', lr=0.001)\n"
        "optimizer_config = dict(type='GradientCumulativeFp16OptimizerHook', cumulative_iters=2,"
        " distributed=False)\n",
    )
    cfg, messages = load(path)
    assert cfg.optim_wrapper == {
        "type": "AmpOptimWrapper",
        "optimizer": {"type": "AdamW", "lr": 0.001},
        "accumulative_counts": 2,
        "loss_scale": 512.0,  # MMCV's Fp16OptimizerHook default: static 512
    }
    assert any("ignored: distributed" in m for m in messages)
    path = write(
        tmp_path, "optimizer = dict(type='SGD', lr=0.1)\nfp16 = dict(loss_scale='dynamic')\n"
    )
    cfg, _ = load(path)
    assert cfg.optim_wrapper.type == "AmpOptimWrapper" and cfg.optim_wrapper.loss_scale == "dynamic"


def test_fp16_placeholder_takes_the_loss_scale_of_the_fp16_hook(tmp_path):
    # mmseg 0.30's convnext fp16 configs: `fp16 = dict()` is a placeholder, the hook says how
    # to scale; MMCV passed both to one Fp16OptimizerHook, whose default is a static 512
    cases = [
        (
            "fp16 = dict()\n"
            "optimizer_config = dict(type='Fp16OptimizerHook', loss_scale='dynamic')",
            "dynamic",
        ),
        (
            "fp16 = dict(loss_scale='dynamic')\noptimizer_config = dict(type='Fp16OptimizerHook')",
            "dynamic",
        ),
        (
            "fp16 = dict(loss_scale=256)\n"
            "optimizer_config = dict(type='Fp16OptimizerHook', loss_scale=256.)",
            256.0,
        ),
        ("fp16 = dict()\noptimizer_config = dict(grad_clip=None)", 512.0),
        ("fp16 = dict()", 512.0),
        ("optimizer_config = dict(type='Fp16OptimizerHook', distributed=False)", 512.0),
    ]
    for text, loss_scale in cases:
        path = write(tmp_path, f"optimizer = dict(type='AdamW', lr=0.001)\n{text}\n")
        cfg, messages = load(path)
        assert cfg.optim_wrapper == {
            "type": "AmpOptimWrapper",
            "optimizer": {"type": "AdamW", "lr": 0.001},
            "loss_scale": loss_scale,
        }, text
        assert "fp16" not in cfg and "optimizer_config" not in cfg
    path = write(
        tmp_path,
        "optimizer = dict(type='AdamW', lr=0.001)\nfp16 = dict()\n"
        "optimizer_config = dict(type='Fp16OptimizerHook', loss_scale='dynamic')\n",
    )
    _, messages = load(path)
    assert any("`fp16` was translated" in m and "placeholder" in m for m in messages)


def test_model_train_and_test_cfg_move_into_the_model(tmp_path):
    # mmdet 2.x (before 2.12 and many user configs): the model's train_cfg / test_cfg at the
    # top level, next to `runner`; mmdet passed them to the model
    path = write(
        tmp_path,
        "model = dict(type='FasterRCNN', backbone=dict(type='ResNet'))\n"
        "train_cfg = dict(rpn=dict(assigner=dict(type='MaxIoUAssigner')), rcnn=None)\n"
        "test_cfg = dict(rpn=dict(nms_pre=1000), rcnn=dict(score_thr=0.05))\n"
        "optimizer = dict(type='SGD', lr=0.02)\n"
        "runner = dict(type='EpochBasedRunner', max_epochs=12)\n"
        "evaluation = dict(interval=1, metric='bbox')\n",
    )
    cfg, messages = load(path)
    assert cfg.model == {
        "type": "FasterRCNN",
        "backbone": {"type": "ResNet"},
        "train_cfg": {"rpn": {"assigner": {"type": "MaxIoUAssigner"}}, "rcnn": None},
        "test_cfg": {"rpn": {"nms_pre": 1000}, "rcnn": {"score_thr": 0.05}},
    }
    assert cfg.train_cfg == {"type": "EpochBasedTrainLoop", "max_epochs": 12, "val_interval": 1}
    assert "test_cfg" not in cfg
    assert any("`train_cfg` was translated to `model.train_cfg`" in m for m in messages)
    assert any("`test_cfg` was translated to `model.test_cfg`" in m for m in messages)
    # mmcls 0.x: no runner; the mixup train_cfg must not become the loop config
    path = write(
        tmp_path,
        "model = dict(type='ImageClassifier')\n"
        "train_cfg = dict(mixup=dict(alpha=0.2, num_classes=1000))\n"
        "optimizer = dict(type='SGD', lr=0.1)\n"
        "total_epochs = 100\n"
        "evaluation = dict(interval=1, metric='accuracy')\n",
    )
    cfg, _ = load(path)
    assert cfg.model.train_cfg == {"mixup": {"alpha": 0.2, "num_classes": 1000}}
    assert cfg.train_cfg == {"type": "EpochBasedTrainLoop", "max_epochs": 100, "val_interval": 1}
    # the same value in both places is fine; empty loop configs stay
    path = write(
        tmp_path,
        "model = dict(type='M', test_cfg=dict(mode='whole'))\ntest_cfg = dict(mode='whole')\n"
        "train_cfg = dict()\nrunner = dict(type='IterBasedRunner', max_iters=10)\n",
    )
    cfg, _ = load(path)
    assert cfg.model == {"type": "M", "test_cfg": {"mode": "whole"}}
    assert cfg.train_cfg == {"type": "IterBasedTrainLoop", "max_iters": 10}


def test_none_values_and_constructor(tmp_path):
    path = write(
        tmp_path,
        "optimizer = dict(type='SGD', lr=0.1, constructor='DefaultOptimizerConstructor',"
        " paramwise_cfg=dict(bias_decay_mult=0.0, dwconv_decay_mult=0.5))\n"
        "lr_config = None\ncheckpoint_config = None\nlog_config = None\nevaluation = None\n",
    )
    cfg, messages = load(path)
    assert cfg.optim_wrapper.constructor == "DefaultOptimWrapperConstructor"
    assert "param_scheduler" not in cfg and "val_cfg" not in cfg
    assert cfg.default_hooks == {"checkpoint": None, "logger": None}
    # the one rule that differs between MMCV 1.x and MMEngine is pointed out
    assert any("depthwise conv's bias now gets bias_decay_mult" in m for m in messages)


@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        (
            "optimizer = dict(type='SGD', lr=0.1, constructor='MyOptimizerConstructor')\n",
            "optimizer.constructor",
            "'MyOptimizerConstructor' builds an optimizer, not an optimizer wrapper",
        ),
        (
            "optimizer = dict(type='SGD', lr=0.1)\noptimizer_config = dict(type='MyHook')\n",
            "optimizer_config.type",
            "no translation for the optimizer hook 'MyHook'",
        ),
        (
            "optimizer = dict(type='SGD', lr=0.1)\noptimizer_config = dict(grad_clip=None, foo=1)\n",
            "optimizer_config",
            "cannot translate 'foo'",
        ),
        (
            "optimizer_config = dict(grad_clip=dict(max_norm=1))\n",
            "optimizer_config",
            "neither `optimizer` nor `optim_wrapper`",
        ),
        (
            "runner = dict(type='EpochBasedRunnerAmp', max_epochs=2)\n",
            "runner.type",
            "no translation for runner 'EpochBasedRunnerAmp'",
        ),
        (
            "runner = dict(type='EpochBasedRunner', max_epochs=2)\ntotal_epochs = 3\n",
            "total_epochs",
            "contradicts runner",
        ),
        (
            "runner = dict(type='IterBasedRunner', max_iters=10)\n"
            "evaluation = dict(interval=2, by_epoch=True)\n",
            "evaluation.by_epoch",
            "does not match the IterBasedTrainLoop",
        ),
        (
            "total_epochs = 12\nevaluation = dict(interval=2, start=3)\n",
            "evaluation.start",
            "has no exact equivalent",
        ),
        (
            "workflow = [('val', 1), ('train', 1)]\n",
            "workflow",
            "cannot translate",
        ),
        (
            "log_config = dict(interval=5, hooks=[dict(type='PaviLoggerHook')])\n",
            "log_config.hooks.0.type",
            "no translation for the logger hook 'PaviLoggerHook'",
        ),
        (
            "lr_config = dict(policy='NoSuchPolicy')\n",
            "lr_config",
            "NoSuchPolicy",
        ),
        (
            "optimizer = dict(type='SGD', lr=0.1)\nfp16 = dict(loss_scale='dynamic')\n"
            "optimizer_config = dict(type='Fp16OptimizerHook', loss_scale=512.)\n",
            "optimizer_config / fp16",
            "optimizer_config sets loss_scale=512.0 and fp16 sets loss_scale='dynamic'",
        ),
        (
            "train_cfg = dict(rpn=dict(allowed_border=0))\nrunner = dict(type='EpochBasedRunner',"
            " max_epochs=1)\n",
            "train_cfg",
            "no `model` dict to move it into",
        ),
        (
            "model = dict(type='M', test_cfg=dict(rcnn=None))\n"
            "test_cfg = dict(rcnn=dict(score_thr=0.05))\n",
            "test_cfg",
            "also sets model.test_cfg",
        ),
        # MMCV 1.x data=: never silently ignored
        (
            "data = dict(samples_per_gpu=8, imgs_per_gpu=8, train=dict(type='D'))\n",
            "data",
            "cannot translate 'imgs_per_gpu'",
        ),
        (
            "data = dict(samples_per_gpu=8, train=dict(type='D'))\n"
            "train_dataloader = dict(batch_size=4, dataset=dict(type='D'))\n",
            "data.train",
            "translates to train_dataloader, but the config also sets train_dataloader",
        ),
        (
            "data = dict(samples_per_gpu=8, train=dict(type='D'), val=dict(type='D'))\n",
            "data.val",
            "translates to val_dataloader, which needs val_evaluator",
        ),
        (
            "data = dict(train=dict(type='D'))\n",
            "data",
            "data.samples_per_gpu is needed for data.train",
        ),
    ],
)
def test_untranslatable_keys_raise_clear_errors(tmp_path, text, key, fragment):
    path = write(tmp_path, text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LegacyConfigWarning)
        with pytest.raises(LegacyConfigError) as exc:
            Config.fromfile(path)
    msg = str(exc.value)
    assert msg.startswith(f"config file {path}, key {key}: "), msg
    assert fragment in msg


def test_mmcv1x_data_becomes_the_dataloaders(tmp_path):
    path = write(
        tmp_path,
        "data = dict(\n"
        "    samples_per_gpu=16, workers_per_gpu=2, persistent_workers=True,\n"
        "    train=dict(type='D', split='train'),\n"
        "    val=dict(type='D', split='val', samples_per_gpu=4),\n"  # mmdet 2.x: in the dataset
        "    test=dict(type='D', split='test'),\n"
        "    test_dataloader=dict(samples_per_gpu=1, shuffle=False),\n"  # mmcls 0.x: per split
        ")\n"
        "val_evaluator = dict(type='Accuracy')\n"
        "test_evaluator = val_evaluator\n"
        "seed = 3\n",
    )
    cfg, messages = load(path)
    common = dict(num_workers=2, persistent_workers=True)
    assert cfg.train_dataloader == dict(
        batch_size=16,
        **common,
        sampler=dict(type="DefaultSampler", shuffle=True),
        dataset=dict(type="D", split="train"),
    )
    assert cfg.val_dataloader == dict(
        batch_size=4,
        **common,
        sampler=dict(type="DefaultSampler", shuffle=False),
        dataset=dict(type="D", split="val"),
    )
    assert cfg.test_dataloader.batch_size == 1 and cfg.test_dataloader.num_workers == 2
    assert cfg.val_cfg == {} and cfg.test_cfg == {} and "data" not in cfg
    assert cfg.randomness == dict(seed=3) and "seed" not in cfg
    assert any("`data` was translated to `train_dataloader, val_dataloader" in m for m in messages)
    assert any("`seed` was translated to `randomness.seed`" in m for m in messages)
