"""Translate MMCV 1.x config keys into the MMEngine vocabulary fastopt uses.

=====================================  =================================================
MMCV 1.x                               becomes
=====================================  =================================================
``optimizer`` (+ ``paramwise_cfg``,    ``optim_wrapper=dict(type='OptimWrapper',
``constructor``)                       optimizer=..., paramwise_cfg=..., constructor=...)``
``optimizer_config.grad_clip``         ``optim_wrapper.clip_grad``
``GradientCumulativeOptimizerHook``    ``optim_wrapper.accumulative_counts``
(``cumulative_iters``)
``Fp16OptimizerHook``, ``fp16``        ``optim_wrapper.type='AmpOptimWrapper'``, ``loss_scale``
``lr_config``, ``momentum_config``     ``param_scheduler`` (``fastopt.scheduler.legacy``)
``checkpoint_config``                  ``default_hooks.checkpoint`` (``CheckpointHook``)
``log_config``                         ``default_hooks.logger`` (+ ``visualizer`` backends)
``evaluation``                         ``val_cfg``, ``train_cfg.val_interval/val_begin``,
                                       ``save_best``/``rule`` → ``default_hooks.checkpoint``
``runner``, ``total_epochs``           ``train_cfg`` (``EpochBasedTrainLoop`` /
                                       ``IterBasedTrainLoop``)
``workflow``                           ``train_cfg.val_interval`` + ``val_cfg``
``resume_from``, ``dist_params``,      ``resume``/``load_from``, ``env_cfg``
``cudnn_benchmark``, ...
``data`` (``samples_per_gpu``,          ``train_dataloader``/``val_dataloader``/
``workers_per_gpu``, ``train``, ...)     ``test_dataloader`` (``batch_size``, ``num_workers``)
top-level ``train_cfg`` / ``test_cfg``   ``model.train_cfg`` / ``model.test_cfg`` (the
of a model (``rpn=``, ``mixup=``...)   model's settings: mmdet 2.x passed them to it)
=====================================  =================================================

Only configs in the MMCV 1.x vocabulary are translated. A config with any key of
:data:`MMENGINE_KEYS` (or a loop-style ``train_cfg``) is an MMEngine config: MMEngine ignores the
MMCV 1.x keys left in it (``cudnn_benchmark`` next to ``env_cfg``, ``runner`` next to
``train_cfg``, ``optimizer_config`` next to ``optim_wrapper``), so they are left exactly as
they are, and reported once with a :class:`LegacyConfigNote`. A top-level ``optimizer`` next to
an ``optim_wrapper`` is a helper variable of such configs and is not reported.

Each translated key is reported once with a :class:`LegacyConfigWarning` naming the old and
the new key; what cannot be translated raises :class:`LegacyConfigError`.
"""

from __future__ import annotations

import copy
import numbers
import os
import sys
import warnings
from collections.abc import Mapping
from typing import Any

from .config_dict import ConfigDict, to_plain
from .errors import LegacyConfigError, LegacyConfigNote, LegacyConfigWarning, where

# The keys only MMEngine configs have (MMCV 1.x keys translate into most of them): a config
# with one of them, or with a loop's train_cfg, is an MMEngine config and is not translated.
# The data keys (train_dataloader, val_evaluator, val_cfg, ...) are not among them: configs
# with MMCV 1.x schedules use them too (and MMCV 1.x `data=` needs val_evaluator).
MMENGINE_KEYS = (
    "optim_wrapper",
    "param_scheduler",
    "default_hooks",
    "env_cfg",
    "log_processor",
    "visualizer",
    "resume",
    "randomness",
    "default_scope",
)
# The MMCV 1.x keys translated here (besides a model's top-level train_cfg / test_cfg)
LEGACY_KEYS = (
    "optimizer",
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
    "cudnn_benchmark",
    "mp_start_method",
    "opencv_num_threads",
    "data",
    "seed",
)
# A top-level train_cfg / test_cfg with one of these keys configures MMEngine's loop; without
# them (`rpn=`, `rcnn=`, `mixup=`, ...) it is, in an MMCV 1.x config, the model's own config
_TRAIN_LOOP_KEYS = frozenset(
    {
        "type",
        "by_epoch",
        "max_epochs",
        "max_iters",
        "val_begin",
        "val_interval",
        "dynamic_intervals",
    }
)
_TEST_LOOP_KEYS = frozenset({"type", "fp16"})
# keys of MMEngine's own that may sit in any dict; they carry no meaning of the MMCV 1.x key
_MARKER_KEYS = frozenset({"_delete_", "_scope_"})

# MMCV 1.x optimizer constructors with an equivalent here
_CONSTRUCTORS = {
    "DefaultOptimizerConstructor": "DefaultOptimWrapperConstructor",
    "DefaultOptimWrapperConstructor": "DefaultOptimWrapperConstructor",
    "LearningRateDecayOptimWrapperConstructor": "LearningRateDecayOptimWrapperConstructor",
}
_OPTIMIZER_HOOKS = {
    # type: (accumulates, fp16)
    "OptimizerHook": (False, False),
    "GradientCumulativeOptimizerHook": (True, False),
    "Fp16OptimizerHook": (False, True),
    "GradientCumulativeFp16OptimizerHook": (True, True),
}
# CheckpointHook arguments with the same meaning in MMEngine, and those without a use here
_CHECKPOINT_KEEP = {
    "interval",
    "by_epoch",
    "save_optimizer",
    "out_dir",
    "max_keep_ckpts",
    "save_last",
    "filename_tmpl",
    "file_client_args",
}
_CHECKPOINT_DROP = {
    "sync_buffer": "buffers are synchronised by SyncBuffersHook in MMEngine",
    "create_symlink": "MMEngine writes `last_checkpoint` instead of a latest.pth link",
}
_TEXT_LOGGER_KEEP = {"ignore_last", "interval_exp_name", "out_dir", "out_suffix", "keep_local"}
_LOGGER_COMMON = {"interval", "ignore_last", "reset_flag", "by_epoch"}
# MMCV logger hook -> (MMEngine vis backend, {mmcv argument: vis backend argument})
_VIS_BACKENDS = {
    "TensorboardLoggerHook": ("TensorboardVisBackend", {"log_dir": "save_dir"}),
    "WandbLoggerHook": ("WandbVisBackend", {"init_kwargs": "init_kwargs", "commit": "commit"}),
    "MlflowLoggerHook": ("MLflowVisBackend", {"exp_name": "exp_name", "tags": "tags"}),
    "NeptuneLoggerHook": ("NeptuneVisBackend", {"init_kwargs": "init_kwargs"}),
    "ClearMLLoggerHook": ("ClearMLVisBackend", {"init_kwargs": "init_kwargs"}),
    "DvcliveLoggerHook": ("DVCLiveVisBackend", {}),
}
_EVAL_LOOP_KEYS = {"interval", "start", "by_epoch"}
_EVAL_CHECKPOINT_KEYS = {"save_best", "rule", "greater_keys", "less_keys"}
# MMCV 1.x `data=dict(...)`: its dataloader settings -> the DataLoader's (None: the sampler's)
_DATA_LOADER_KEYS = {
    "samples_per_gpu": "batch_size",
    "workers_per_gpu": "num_workers",
    "persistent_workers": "persistent_workers",
    "pin_memory": "pin_memory",
    "drop_last": "drop_last",
    "shuffle": None,
}
_DATA_SPLITS = ("train", "val", "test")
_RUNNERS = {
    "EpochBasedRunner": ("EpochBasedTrainLoop", "max_epochs"),
    "IterBasedRunner": ("IterBasedTrainLoop", "max_iters"),
}


def _caller_stacklevel() -> int:
    """The stacklevel of the first frame outside fastopt.config (the code loading the config)."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while (
        frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package
    ):
        frame, level = frame.f_back, level + 1
    return level


def _plain(value: Any) -> Any:
    """A deep, plain-dict copy without a leftover ``_delete_`` marker."""
    value = to_plain(copy.deepcopy(value))
    if isinstance(value, dict):
        value.pop("_delete_", None)
    return value


def _is_loop_cfg(value: Any, loop_keys: frozenset[str]) -> bool:
    return isinstance(value, Mapping) and not loop_keys.isdisjoint(value)


def _is_model_cfg(value: Any, loop_keys: frozenset[str]) -> bool:
    return (
        isinstance(value, Mapping)
        and bool(set(value) - _MARKER_KEYS)
        and loop_keys.isdisjoint(value)
    )


def mmengine_keys(cfg: Mapping[str, Any]) -> list[str]:
    """The keys that make ``cfg`` an MMEngine config; empty for an MMCV 1.x config."""
    found = [key for key in MMENGINE_KEYS if key in cfg]
    if _is_loop_cfg(cfg.get("train_cfg"), _TRAIN_LOOP_KEYS):
        found.append("train_cfg")
    return found


# (config file, leftover keys) already reported: a config file is often translated twice (on
# load and again by Runner.from_cfg), and the note is about the file, not about each call
_noted: set[tuple[str, tuple[str, ...]]] = set()


def _note_leftovers(cfg: Mapping[str, Any], markers: list[str], filename: str | None) -> None:
    leftovers = tuple(
        key
        for key in LEGACY_KEYS
        if key in cfg and not (key == "optimizer" and "optim_wrapper" in cfg)
    )
    if not leftovers or (filename, leftovers) in _noted:
        return
    if filename is not None:
        _noted.add((filename, leftovers))
    origin = where(filename)
    msg = (
        f"MMCV 1.x keys left as they are, unused (as under MMEngine): "
        f"{', '.join(f'`{k}`' for k in leftovers)}; the config is an MMEngine config (it has "
        f"{', '.join(f'`{k}`' for k in markers)}), so they are not translated. Remove them, "
        "or move what they set into the MMEngine keys."
    )
    warnings.warn(
        f"{origin}: {msg}" if origin else msg, LegacyConfigNote, stacklevel=_caller_stacklevel()
    )


class _Translator:
    def __init__(self, cfg: ConfigDict, filename: str | None) -> None:
        self.cfg = cfg
        self.filename = filename
        # MMCV's IterBasedRunner defaults by_epoch=False for lr_config, checkpoint_config and
        # the logger hooks (register_training_hooks); decided before `runner` is translated
        runner = cfg.get("runner")
        self.iter_based = isinstance(runner, dict) and runner.get("type") == "IterBasedRunner"

    # ---------------------------------------------------------------- helpers
    def report(self, old: str, new: str, note: str = "") -> None:
        origin = where(self.filename)
        msg = f"MMCV 1.x key `{old}` was translated to `{new}`"
        if note:
            msg += f" ({note})"
        if origin:
            msg = f"{origin}: {msg}"
        warnings.warn(msg, LegacyConfigWarning, stacklevel=_caller_stacklevel())

    def error(self, key: str, message: str) -> LegacyConfigError:
        return LegacyConfigError(f"{where(self.filename, key)}: {message}")

    def take(self, key: str) -> Any:
        return _plain(self.cfg.pop(key))

    def section(self, key: str) -> ConfigDict:
        """The new-style dict ``cfg[key]``, created if missing."""
        value = self.cfg.get(key)
        if value is None:
            self.cfg[key] = {}
        elif not isinstance(value, dict):
            raise self.error(key, f"expected a dict to translate legacy keys into, got {value!r}")
        return self.cfg[key]

    def set_once(self, section: str, key: str, value: Any, old: str) -> None:
        """Set ``cfg[section][key]``; a different value set by the config is a conflict."""
        target = self.section(section)
        if key in target and target[key] != value:
            raise self.error(
                old,
                f"translates to {section}.{key}={value!r}, but the config also sets "
                f"{section}.{key}={target[key]!r}; remove one of them",
            )
        target[key] = value

    def unknown(self, key: str, names: Any, what: str) -> None:
        names = sorted(set(names) - _MARKER_KEYS)
        if names:
            raise self.error(key, f"cannot translate {', '.join(repr(n) for n in names)} ({what})")

    # ---------------------------------------------------------------- optimizer
    def optim_wrapper(self) -> None:
        cfg = self.cfg
        legacy_optimizer = "optim_wrapper" not in cfg and "optimizer" in cfg
        if not (legacy_optimizer or "optimizer_config" in cfg or "fp16" in cfg):
            return
        notes: list[str] = []
        if legacy_optimizer:
            optimizer = self.take("optimizer")
            if not isinstance(optimizer, dict):
                raise self.error("optimizer", f"expected a dict, got {optimizer!r}")
            wrapper: dict[str, Any] = {"type": "OptimWrapper", "optimizer": optimizer}
            paramwise = optimizer.pop("paramwise_cfg", None)
            constructor = optimizer.pop("constructor", None)
            if constructor is not None:
                if constructor not in _CONSTRUCTORS:
                    raise self.error(
                        "optimizer.constructor",
                        f"the MMCV 1.x optimizer constructor {constructor!r} builds an "
                        "optimizer, not an optimizer wrapper, and has no translation; port it "
                        "to an OPTIM_WRAPPER_CONSTRUCTORS class and set optim_wrapper.constructor",
                    )
                wrapper["constructor"] = _CONSTRUCTORS[constructor]
                notes.append(
                    f"constructor -> optim_wrapper.constructor={_CONSTRUCTORS[constructor]!r}"
                )
            if paramwise is not None:
                wrapper["paramwise_cfg"] = paramwise
                notes.append("paramwise_cfg -> optim_wrapper.paramwise_cfg")
                if isinstance(paramwise, dict) and {"bias_decay_mult", "dwconv_decay_mult"} <= set(
                    paramwise
                ):
                    notes.append(
                        "a depthwise conv's bias now gets bias_decay_mult; MMCV 1.x gave it "
                        "dwconv_decay_mult"
                    )
            cfg["optim_wrapper"] = wrapper
            self.report("optimizer", "optim_wrapper.optimizer", "; ".join(notes))
        # MMCV 1.x keys that ask for mixed precision -> the loss scale each sets (None: not set)
        amp: dict[str, Any] = {}
        if "optimizer_config" in cfg:
            self._optimizer_config(self.take("optimizer_config"), amp)
        if "fp16" in cfg:
            fp16 = self.take("fp16")
            note = ""
            if fp16 is not None:
                if not isinstance(fp16, dict):
                    raise self.error("fp16", f"expected a dict, got {fp16!r}")
                self.unknown("fp16", set(fp16) - {"loss_scale"}, "only loss_scale is supported")
                self._wrapper("fp16")
                amp["fp16"] = fp16.get("loss_scale")
                if amp["fp16"] is None and amp.get("optimizer_config") is not None:
                    note = "an empty placeholder: the loss scale is optimizer_config's"
            self.report(
                "fp16", "optim_wrapper.type='AmpOptimWrapper', optim_wrapper.loss_scale", note
            )
        if amp:
            self._amp(amp)

    def _wrapper(self, old: str) -> ConfigDict:
        if "optim_wrapper" not in self.cfg:
            raise self.error(
                old, "needs an optimizer: the config has neither `optimizer` nor `optim_wrapper`"
            )
        return self.section("optim_wrapper")

    def _amp(self, requests: dict[str, Any]) -> None:
        """Make the wrapper an ``AmpOptimWrapper``.

        ``requests`` maps each MMCV 1.x key asking for mixed precision (``optimizer_config``
        with an fp16 hook, ``fp16``) to the loss scale it sets, None where it sets none: MMCV
        passed both to one Fp16OptimizerHook, so ``fp16=dict()`` is a placeholder and
        ``optimizer_config``'s ``loss_scale='dynamic'`` holds.
        """
        old = " / ".join(requests)
        given = {key: value for key, value in requests.items() if value is not None}
        values = list(given.values())
        if any(value != values[0] for value in values[1:]):
            both = " and ".join(f"{key} sets loss_scale={value!r}" for key, value in given.items())
            raise self.error(old, f"{both}; keep one of them")
        loss_scale = values[0] if values else 512.0  # MMCV's Fp16OptimizerHook default
        wrapper = self._wrapper(old)
        current = wrapper.get("type", "OptimWrapper")
        if current not in ("OptimWrapper", "AmpOptimWrapper"):
            raise self.error(
                old, f"mixed precision cannot be added to optim_wrapper type {current!r}"
            )
        wrapper["type"] = "AmpOptimWrapper"
        # MMEngine rejects an int loss scale (TypeError); MMCV took 512 and 512. alike
        if isinstance(loss_scale, numbers.Real) and not isinstance(loss_scale, bool):
            loss_scale = float(loss_scale)
        self.set_once("optim_wrapper", "loss_scale", loss_scale, old)

    def _optimizer_config(self, oc: Any, amp: dict[str, Any]) -> None:
        if oc is None:
            self.report("optimizer_config", "optim_wrapper", "None: nothing to translate")
            return
        if not isinstance(oc, dict):
            raise self.error("optimizer_config", f"expected a dict, got {oc!r}")
        hook = oc.pop("type", "OptimizerHook")
        if hook not in _OPTIMIZER_HOOKS:
            raise self.error(
                "optimizer_config.type",
                f"no translation for the optimizer hook {hook!r}; supported: "
                + ", ".join(_OPTIMIZER_HOOKS),
            )
        accumulates, fp16 = _OPTIMIZER_HOOKS[hook]
        grad_clip = oc.pop("grad_clip", None)
        cumulative = oc.pop("cumulative_iters", 1) if accumulates else None
        loss_scale = oc.pop("loss_scale", None) if fp16 else None
        dropped = [
            k for k in ("coalesce", "bucket_size_mb", "distributed") if oc.pop(k, None) is not None
        ]
        if fp16 is False and dropped:
            raise self.error("optimizer_config", f"{dropped} only apply to Fp16OptimizerHook")
        self.unknown("optimizer_config", oc, f"not arguments of {hook}")
        if grad_clip is None and not accumulates and not fp16:
            self.report(
                "optimizer_config", "optim_wrapper", "no gradient clipping: nothing to translate"
            )
            return
        new = []
        if grad_clip is not None:
            if not isinstance(grad_clip, dict):
                raise self.error(
                    "optimizer_config.grad_clip", f"expected a dict, got {grad_clip!r}"
                )
            self._wrapper("optimizer_config")
            self.set_once("optim_wrapper", "clip_grad", grad_clip, "optimizer_config.grad_clip")
            new.append("optim_wrapper.clip_grad")
        if accumulates:
            self._wrapper("optimizer_config")
            self.set_once(
                "optim_wrapper",
                "accumulative_counts",
                cumulative,
                "optimizer_config.cumulative_iters",
            )
            new.append("optim_wrapper.accumulative_counts")
        if fp16:
            self._wrapper("optimizer_config")
            amp["optimizer_config"] = loss_scale
            new.append("optim_wrapper.type='AmpOptimWrapper', optim_wrapper.loss_scale")
        note = f"ignored: {', '.join(dropped)} (DDP handles gradient all-reduce)" if dropped else ""
        self.report("optimizer_config", ", ".join(new) or "optim_wrapper", note)

    # ---------------------------------------------------------------- schedules
    def schedules(self) -> None:
        cfg = self.cfg
        present = [k for k in ("lr_config", "momentum_config") if k in cfg]
        if not present:
            return
        lr_config = self.take("lr_config") if "lr_config" in cfg else None
        momentum_config = self.take("momentum_config") if "momentum_config" in cfg else None
        keys = " / ".join(present)
        if lr_config is None and momentum_config is None:
            for key in present:
                self.report(key, "param_scheduler", "None: no schedule")
            return
        try:
            from fastopt.scheduler.legacy import translate_legacy_schedules
        except ModuleNotFoundError as e:
            if e.name in ("fastopt.scheduler", "fastopt.scheduler.legacy"):
                raise self.error(keys, "fastopt.scheduler.legacy is not available") from e
            raise
        if self.iter_based and isinstance(lr_config, dict):
            lr_config.setdefault("by_epoch", False)
        try:
            schedulers = translate_legacy_schedules(lr_config, momentum_config)
        except (ValueError, KeyError, TypeError) as e:
            raise self.error(keys, str(e)) from e
        cfg["param_scheduler"] = schedulers
        for key, value in (("lr_config", lr_config), ("momentum_config", momentum_config)):
            if key in present:
                self.report(
                    key, "param_scheduler", "" if value is not None else "None: no schedule"
                )

    # ---------------------------------------------------------------- hooks
    def checkpoint(self) -> None:
        if "checkpoint_config" not in self.cfg:
            return
        ck = self.take("checkpoint_config")
        hooks = self.section("default_hooks")
        if ck is None:
            hooks["checkpoint"] = None
            self.report("checkpoint_config", "default_hooks.checkpoint", "None: no checkpoints")
            return
        if self.iter_based:
            ck.setdefault("by_epoch", False)
        dropped = [k for k in _CHECKPOINT_DROP if k in ck]
        for key in dropped:
            ck.pop(key)
        self.unknown(
            "checkpoint_config",
            set(ck) - _CHECKPOINT_KEEP,
            "not arguments of MMEngine's CheckpointHook",
        )
        hooks["checkpoint"] = {"type": "CheckpointHook", **ck}
        note = "; ".join(f"ignored {k}: {_CHECKPOINT_DROP[k]}" for k in dropped)
        self.report("checkpoint_config", "default_hooks.checkpoint", note)

    def logger(self) -> None:
        if "log_config" not in self.cfg:
            return
        lc = self.take("log_config")
        hooks = self.section("default_hooks")
        if lc is None:
            hooks["logger"] = None
            self.report("log_config", "default_hooks.logger", "None: no logging")
            return
        interval = lc.pop("interval", 10)
        loggers = lc.pop("hooks", [])
        self.unknown("log_config", lc, "log_config accepts interval and hooks")
        logger: dict[str, Any] = {"type": "LoggerHook", "interval": interval}
        backends: list[dict[str, Any]] = []
        new = ["default_hooks.logger"]
        for i, hook in enumerate(loggers):
            key = f"log_config.hooks.{i}"
            hook = dict(hook)
            kind = hook.pop("type", None)
            if kind == "TextLoggerHook":
                if "interval" in hook:
                    logger["interval"] = hook.pop("interval")
                if self.iter_based:
                    hook.setdefault("by_epoch", False)
                if "by_epoch" in hook:
                    self.set_once("log_processor", "by_epoch", hook.pop("by_epoch"), key)
                    new.append("log_processor.by_epoch")
                hook.pop("reset_flag", None)
                for name in _TEXT_LOGGER_KEEP & set(hook):
                    logger[name] = hook.pop(name)
                self.unknown(key, hook, "not arguments of MMEngine's LoggerHook")
            elif kind in _VIS_BACKENDS:
                backend_type, renames = _VIS_BACKENDS[kind]
                backend: dict[str, Any] = {"type": backend_type}
                for name in _LOGGER_COMMON & set(hook):
                    hook.pop(name)
                for old_name, new_name in renames.items():
                    if old_name in hook:
                        backend[new_name] = hook.pop(old_name)
                self.unknown(key, hook, f"no {backend_type} equivalent")
                backends.append(backend)
            else:
                raise self.error(
                    f"{key}.type",
                    f"no translation for the logger hook {kind!r}; supported: TextLoggerHook, "
                    + ", ".join(_VIS_BACKENDS),
                )
        hooks["logger"] = logger
        if backends:
            self.cfg["visualizer"] = {
                "type": "Visualizer",
                "vis_backends": [{"type": "LocalVisBackend"}, *backends],
            }
            new.append("visualizer.vis_backends")
        self.report("log_config", ", ".join(new))

    # ---------------------------------------------------------------- loops
    def train_loop(self) -> None:
        cfg = self.cfg
        if "runner" not in cfg and "total_epochs" not in cfg:
            return
        runner = self.take("runner") if "runner" in cfg else None
        total_epochs = self.take("total_epochs") if "total_epochs" in cfg else None
        old = " / ".join(
            k for k, v in (("runner", runner), ("total_epochs", total_epochs)) if v is not None
        )
        if runner is None:
            if total_epochs is None:
                return
            runner = {"type": "EpochBasedRunner", "max_epochs": total_epochs}
        if not isinstance(runner, dict) or "type" not in runner:
            raise self.error(
                "runner", f"expected dict(type=..., max_epochs|max_iters=...), got {runner!r}"
            )
        kind = runner.pop("type")
        if kind not in _RUNNERS:
            raise self.error(
                "runner.type",
                f"no translation for runner {kind!r}; supported: {', '.join(_RUNNERS)}",
            )
        loop, length_key = _RUNNERS[kind]
        if length_key not in runner:
            raise self.error("runner", f"{kind} needs {length_key}")
        length = runner.pop(length_key)
        self.unknown("runner", runner, f"{kind} only takes {length_key} here")
        if total_epochs is not None and (loop != "EpochBasedTrainLoop" or length != total_epochs):
            raise self.error(
                "total_epochs",
                f"total_epochs={total_epochs} contradicts runner=dict(type={kind!r}, "
                f"{length_key}={length})",
            )
        # an empty train_cfg may be left; a model's one was moved into `model` (model_cfgs)
        cfg["train_cfg"] = {"type": loop, length_key: length, **self.section("train_cfg")}
        self.report(old, f"train_cfg=dict(type='{loop}', {length_key}={length})")

    def _loop_is_iter_based(self) -> bool | None:
        train_cfg = self.cfg.get("train_cfg")
        if not isinstance(train_cfg, dict):
            return None
        if "type" in train_cfg:
            return train_cfg["type"] == "IterBasedTrainLoop"
        return None if "by_epoch" not in train_cfg else not train_cfg["by_epoch"]

    def _val_cfg(self) -> None:
        if self.cfg.get("val_cfg") is None:
            self.cfg["val_cfg"] = {"type": "ValLoop"}

    def evaluation(self) -> None:
        if "evaluation" not in self.cfg:
            return
        ev = self.take("evaluation")
        if ev is None:
            self.report("evaluation", "val_cfg", "None: no validation")
            return
        interval = ev.pop("interval", 1)
        start = ev.pop("start", None)
        # the default differs downstream (mmdet: True, mmseg: False): follow the loop unless set
        by_epoch = ev.pop("by_epoch", None)
        iter_based = self._loop_is_iter_based()
        if by_epoch is not None and iter_based is not None and iter_based == bool(by_epoch):
            loop = "IterBasedTrainLoop" if iter_based else "EpochBasedTrainLoop"
            raise self.error(
                "evaluation.by_epoch",
                f"by_epoch={by_epoch} does not match the {loop} of this config",
            )
        new = ["val_cfg", "train_cfg.val_interval"]
        self.set_once("train_cfg", "val_interval", interval, "evaluation.interval")
        if start is not None:
            # MMCV validates when (n - start) % interval == 0 and n >= start; MMEngine when
            # n % val_interval == 0 and n >= val_begin: the same iff start % interval == 0
            if start < 1 or start % interval != 0:
                raise self.error(
                    "evaluation.start",
                    f"start={start} with interval={interval} has no exact equivalent; MMEngine "
                    "validates when the epoch is a multiple of val_interval and >= val_begin: "
                    "set train_cfg.val_begin / val_interval instead",
                )
            self.set_once("train_cfg", "val_begin", start, "evaluation.start")
            new.append("train_cfg.val_begin")
        checkpoint_args = {k: ev.pop(k) for k in _EVAL_CHECKPOINT_KEYS & set(ev)}
        if checkpoint_args:
            if checkpoint_args.get("save_best") is True:
                checkpoint_args["save_best"] = "auto"
            elif checkpoint_args.get("save_best") is False:
                checkpoint_args["save_best"] = None
            hooks = self.section("default_hooks")
            if hooks.get("checkpoint") is None:
                # MMEngine's default checkpoint hook, now with save_best
                hooks["checkpoint"] = {"type": "CheckpointHook", "interval": 1}
            hook = hooks["checkpoint"]
            for key, value in checkpoint_args.items():
                if key in hook and hook[key] != value:
                    raise self.error(
                        f"evaluation.{key}", f"conflicts with default_hooks.checkpoint.{key}"
                    )
                hook[key] = value
            new.append("default_hooks.checkpoint." + "/".join(sorted(checkpoint_args)))
        self._val_cfg()
        note = ""
        if ev:
            note = (
                f"not translated: {', '.join(sorted(ev))} (MMCV passed them to "
                "dataset.evaluate(); configure `val_evaluator` instead)"
            )
        self.report("evaluation", ", ".join(new), note)

    def workflow(self) -> None:
        if "workflow" not in self.cfg:
            return
        workflow = self.take("workflow")
        phases = [tuple(p) for p in workflow or []]
        valid = all(
            len(p) == 2 and p[0] in ("train", "val") and isinstance(p[1], int) for p in phases
        )
        if not valid or not phases or phases[0][0] != "train" or len(phases) > 2:
            raise self.error(
                "workflow",
                f"cannot translate {workflow!r}: supported are [('train', n)] and "
                "[('train', n), ('val', 1)]",
            )
        if len(phases) == 1:
            self.report("workflow", "train_cfg", "training only: nothing to set")
            return
        if phases[1] != ("val", 1):
            raise self.error(
                "workflow", f"cannot translate {phases[1]!r}: only ('val', 1) is supported"
            )
        train_cfg = self.section("train_cfg")
        if "val_interval" in train_cfg and train_cfg["val_interval"] != phases[0][1]:
            # `evaluation` already sets how often to validate (its metrics are the point)
            self.report("workflow", "train_cfg.val_interval", "kept evaluation.interval")
            return
        train_cfg["val_interval"] = phases[0][1]
        self._val_cfg()
        self.report("workflow", "train_cfg.val_interval, val_cfg")

    def model_cfgs(self) -> None:
        """A model's top-level ``train_cfg`` / ``test_cfg`` (mmdet 2.x) moves into ``model``.

        MMEngine reads these keys as its loops' configs; mmdet 2.x passed them to the model
        (asserting that the model did not set them too).
        """
        for key, loop_keys in (("train_cfg", _TRAIN_LOOP_KEYS), ("test_cfg", _TEST_LOOP_KEYS)):
            if not _is_model_cfg(self.cfg.get(key), loop_keys):
                continue
            model = self.cfg.get("model")
            if not isinstance(model, dict):
                raise self.error(
                    key,
                    "has no loop keys, so it is a model's config (MMCV 1.x), but the config "
                    "has no `model` dict to move it into",
                )
            value = self.take(key)
            if model.get(key) is not None and to_plain(model[key]) != value:
                raise self.error(key, f"the config also sets model.{key}; remove one of them")
            model[key] = value
            self.report(
                key,
                f"model.{key}",
                f"a top-level {key} without loop keys is the model's in MMCV 1.x configs",
            )

    # ---------------------------------------------------------------- runtime
    def runtime(self) -> None:
        cfg = self.cfg
        if "resume_from" in cfg:
            path = self.take("resume_from")
            if path is not None:
                if cfg.get("load_from") not in (None, path):
                    raise self.error("resume_from", "contradicts load_from; remove one of them")
                cfg["load_from"] = path
                cfg["resume"] = True
                self.report("resume_from", "resume=True, load_from")
            else:
                self.report("resume_from", "resume", "None: nothing to resume")
        env = []
        if "dist_params" in cfg:
            params = self.take("dist_params")
            if params is not None:
                self.section("env_cfg").setdefault("dist_cfg", {}).update(params)
            env.append(("dist_params", "env_cfg.dist_cfg"))
        if "cudnn_benchmark" in cfg:
            self.set_once(
                "env_cfg", "cudnn_benchmark", self.take("cudnn_benchmark"), "cudnn_benchmark"
            )
            env.append(("cudnn_benchmark", "env_cfg.cudnn_benchmark"))
        for key in ("mp_start_method", "opencv_num_threads"):
            if key in cfg:
                self.section("env_cfg").setdefault("mp_cfg", {})[key] = self.take(key)
                env.append((key, f"env_cfg.mp_cfg.{key}"))
        for old, new in env:
            self.report(old, new)
        if "seed" in cfg:  # what MMCV 1.x tools/train.py set as cfg.seed (from --seed)
            seed = self.take("seed")
            self.set_once("randomness", "seed", seed, "seed")
            self.report("seed", "randomness.seed")

    # ---------------------------------------------------------------- data
    def data(self) -> None:
        """``data=dict(samples_per_gpu, workers_per_gpu, train, val, test, ...)`` → the three
        dataloaders (``batch_size``/``num_workers`` per process, as MMCV's per GPU).

        ``train_dataloader``/``val_dataloader``/``test_dataloader`` inside ``data`` (mmcls
        0.x) override the shared settings for one split, and a ``samples_per_gpu`` in a
        val/test dataset (mmdet 2.x) its batch size. A split is shuffled only for training
        unless ``shuffle`` says otherwise.
        """
        if "data" not in self.cfg:
            return
        data = self.take("data")
        if not isinstance(data, dict):
            raise self.error("data", f"expected a dict, got {data!r}")
        shared = {k: data.pop(k) for k in _DATA_LOADER_KEYS if k in data}
        per_split = {s: data.pop(f"{s}_dataloader", None) or {} for s in _DATA_SPLITS}
        datasets = {s: data.pop(s) for s in _DATA_SPLITS if s in data}
        self.unknown(
            "data",
            data,
            "data= takes samples_per_gpu, workers_per_gpu, persistent_workers, pin_memory, "
            "shuffle, drop_last, train/val/test and train/val/test_dataloader",
        )
        new = []
        for split, dataset in datasets.items():
            key = f"{split}_dataloader"
            if key in self.cfg:
                raise self.error(
                    f"data.{split}",
                    f"translates to {key}, but the config also sets {key}; remove one of them",
                )
            if not isinstance(dataset, dict):
                raise self.error(f"data.{split}", f"expected a dataset dict, got {dataset!r}")
            args = dict(shared)
            if "samples_per_gpu" in dataset:  # mmdet 2.x: the val/test batch in the dataset
                args["samples_per_gpu"] = dataset.pop("samples_per_gpu")
            overrides = per_split[split]
            self.unknown(f"data.{key}", set(overrides) - set(_DATA_LOADER_KEYS), "per split")
            args.update(overrides)
            if "samples_per_gpu" not in args:
                raise self.error("data", f"data.samples_per_gpu is needed for data.{split}")
            loader: dict[str, Any] = {
                new_key: args[old_key]
                for old_key, new_key in _DATA_LOADER_KEYS.items()
                if old_key in args and new_key is not None
            }
            shuffle = args.get("shuffle", split == "train")
            loader.update(sampler=dict(type="DefaultSampler", shuffle=shuffle), dataset=dataset)
            self.cfg[key] = loader
            new.append(key)
            if split == "train":
                continue
            evaluator = f"{split}_evaluator"
            if evaluator not in self.cfg:
                raise self.error(
                    f"data.{split}",
                    f"translates to {key}, which needs {evaluator} (MMCV 1.x called the "
                    f"dataset's evaluate(); fastopt a metric): add e.g. {evaluator}="
                    f"dict(type='Accuracy', topk=(1, 5)), or remove data.{split}",
                )
            self.cfg.setdefault(f"{split}_cfg", {})
        self.report("data", ", ".join(new) or "nothing", "samples_per_gpu → batch_size")

    def run(self) -> ConfigDict:
        self.model_cfgs()  # first: train_cfg must be free for the loop keys below
        self.data()
        self.optim_wrapper()
        self.schedules()
        self.train_loop()
        self.checkpoint()
        self.logger()
        self.evaluation()
        self.workflow()
        self.runtime()
        return self.cfg


def translate_legacy_config(cfg: Any, filename: str | None = None) -> ConfigDict:
    """Return a copy of ``cfg`` with MMCV 1.x keys translated (``cfg`` is not modified).

    An MMEngine config (one with a key of :data:`MMENGINE_KEYS` or a loop's ``train_cfg``)
    comes back unchanged: its leftover MMCV 1.x keys are reported once with a
    :class:`LegacyConfigNote`. ``filename`` only appears in warnings and errors.
    """
    cfg = ConfigDict(copy.deepcopy(dict(cfg)))
    markers = mmengine_keys(cfg)
    if markers:
        _note_leftovers(cfg, markers, filename)
        return cfg
    return _Translator(cfg, filename).run()
