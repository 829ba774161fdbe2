"""The top-level keys of a training config that fastopt reads, declared once, and the checks
that catch a misspelt or dead key.

Real OpenMMLab configs carry many helper variables next to these (``data_root``,
``dataset_type``, ``img_scale``, ``backend_args``, ...), so an unknown key in a config file is
not an error, and gets a warning only when it looks like a misspelling of a known key
(``param_schedulers``, ``optim_wraper``). ``--cfg-options`` is stricter, since a typo there
is never intended: its top-level key must be a key of the config or a known key, else it is
an error naming the closest one; and overriding a helper variable gets a warning, because
the values the config computed from it when it was loaded do not change.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigKeyError

# the Runner's constructor arguments that a config sets, by the same names (Runner.from_cfg
# passes each one the config has); tests/test_config_checks.py checks them against the
# constructor's signature
RUNNER_ARGUMENTS: tuple[str, ...] = (
    "model",
    "work_dir",
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "train_cfg",
    "val_cfg",
    "test_cfg",
    "auto_scale_lr",
    "optim_wrapper",
    "param_scheduler",
    "val_evaluator",
    "test_evaluator",
    "default_hooks",
    "custom_hooks",
    "data_preprocessor",
    "load_from",
    "resume",
    "launcher",
    "env_cfg",
    "log_processor",
    "log_level",
    "visualizer",
    "default_scope",
    "randomness",
    "experiment_name",
)
# read by the runner from its config (``runner.cfg``) while it builds the model
RUNNER_CFG_KEYS = frozenset({"model_wrapper_cfg", "find_unused_parameters", "sync_bn"})
RUNNER_KEYS = frozenset(RUNNER_ARGUMENTS) | RUNNER_CFG_KEYS
# read elsewhere: RUNNERS.build / the commands (runner_type), Config.fromfile (custom_imports)
OTHER_KEYS = frozenset({"runner_type", "custom_imports"})
# MMCV 1.x keys translated by fastopt.config.legacy -> where the value goes (for hints)
LEGACY_KEYS: Mapping[str, str] = {
    "optimizer": "optim_wrapper.optimizer",
    "optimizer_config": "optim_wrapper",
    "fp16": "optim_wrapper (AmpOptimWrapper)",
    "lr_config": "param_scheduler",
    "momentum_config": "param_scheduler",
    "checkpoint_config": "default_hooks.checkpoint",
    "log_config": "default_hooks.logger",
    "evaluation": "val_cfg and train_cfg.val_interval",
    "runner": "train_cfg",
    "total_epochs": "train_cfg.max_epochs",
    "workflow": "train_cfg.val_interval",
    "resume_from": "resume and load_from",
    "dist_params": "env_cfg.dist_cfg",
    "cudnn_benchmark": "env_cfg.cudnn_benchmark",
    "data": "train_dataloader, val_dataloader and test_dataloader",
    "seed": "randomness.seed",
}
# read by MMEngine's Runner but not by fastopt's: present and set, they get a warning
MMENGINE_ONLY_KEYS: Mapping[str, str] = {
    "compile": "the model is not compiled (call torch.compile in the model)",
    "efficient_conv_bn_eval": "not supported",
    "activation_checkpointing": "not supported",
    "strategy": "MMEngine's FlexibleRunner strategies are not supported",
}
KNOWN_KEYS = RUNNER_KEYS | OTHER_KEYS | frozenset(LEGACY_KEYS) | frozenset(MMENGINE_ONLY_KEYS)

# how close a key must be to a known one to be called a misspelling of it (difflib ratio):
# catches one or two wrong letters, leaves helper variables such as `optimizer` alone
MISSPELLING_CUTOFF = 0.85


def closest_key(key: str, candidates: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The candidate most like ``key``, or None."""
    close = difflib.get_close_matches(key, sorted(set(candidates)), n=1, cutoff=cutoff)
    return close[0] if close else None


def unused_key_warnings(cfg: Mapping[str, Any]) -> list[str]:
    """Warnings for the top-level keys of a loaded (translated) config that nothing reads:
    close misspellings of a known key, and MMEngine-only options that are set."""
    messages = []
    for key in cfg:
        if not isinstance(key, str) or key.startswith("_"):
            continue
        if key in MMENGINE_ONLY_KEYS:
            if cfg[key] not in (None, False, {}):
                messages.append(
                    f"config key {key!r} is an option of MMEngine's Runner that fastopt does "
                    f"not read: {MMENGINE_ONLY_KEYS[key]}"
                )
            continue
        if key in KNOWN_KEYS:
            continue
        close = closest_key(key, KNOWN_KEYS, MISSPELLING_CUTOFF)
        if close:
            also = " (which the config also sets)" if close in cfg else ""
            messages.append(
                f"config key {key!r} is not read by fastopt; did you mean {close!r}{also}?"
            )
    return messages


def check_option_keys(options: Mapping[str, Any], cfg: Mapping[str, Any]) -> list[str]:
    """Check the top-level keys of ``--cfg-options`` against the config as written.

    Raises :class:`ConfigKeyError` for a key that is neither in the config nor known (the
    closest name in the message), or an MMCV 1.x key the config does not use (it would be
    applied after the translation, where nothing reads it). Returns warnings for overrides
    of helper variables.
    """
    messages = []
    for option in options:
        top = str(option).split(".")[0]
        if top in cfg:
            if top not in KNOWN_KEYS and not top.startswith("_"):
                messages.append(
                    f"--cfg-options {option}: {top!r} is a variable of the config that fastopt "
                    "does not read; the values the config computed from it are not changed"
                )
            continue
        if top in LEGACY_KEYS:
            raise ConfigKeyError(
                f"--cfg-options {option}: {top!r} is an MMCV 1.x key and this config does not "
                f"use it; set {LEGACY_KEYS[top]} instead"
            )
        if top in KNOWN_KEYS:
            continue
        close = closest_key(top, [*(k for k in cfg if isinstance(k, str)), *RUNNER_KEYS])
        hint = f"; did you mean {close!r}?" if close else ""
        raise ConfigKeyError(
            f"--cfg-options {option}: {top!r} is neither a key of the config nor a key "
            f"fastopt reads{hint}"
        )
    return messages
