"""``build_optim_wrapper(model, cfg)``: an ``optim_wrapper`` config → a built wrapper."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fastopt.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, resolve_type

from .default_constructor import copy_config


def build_optim_wrapper(model: nn.Module, cfg: Mapping[str, Any]) -> Any:
    """Build the optimizer wrapper that ``cfg`` describes for ``model`` (MMEngine semantics).

    ``cfg`` is an ``optim_wrapper`` config: ``type`` (default ``'OptimWrapper'``), ``optimizer``,
    optional ``paramwise_cfg`` and ``constructor`` (default ``'DefaultOptimWrapperConstructor'``),
    plus the wrapper's own arguments (``clip_grad``, ``accumulative_counts``, ...). An
    ``optimizer`` that is already built is wrapped as is. ``cfg`` is not modified.
    """
    if not isinstance(cfg, Mapping):
        raise TypeError(f"optim_wrapper config should be a dict, but got {type(cfg)}")
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, torch.optim.Optimizer):
        # an optimizer built by the caller is wrapped as is (and never copied)
        rest = copy_config({k: v for k, v in cfg.items() if k != "optimizer"})
        for key in ("constructor", "paramwise_cfg"):
            if rest.get(key) is not None:
                raise ValueError(
                    f"optim_wrapper.{key} needs an optimizer config, but optim_wrapper.optimizer "
                    "is an already built optimizer"
                )
            rest.pop(key, None)
        rest.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(rest, default_args=dict(optimizer=optimizer))
    optim_wrapper_cfg = copy_config(cfg)
    constructor_type = optim_wrapper_cfg.pop("constructor", "DefaultOptimWrapperConstructor")
    paramwise_cfg = optim_wrapper_cfg.pop("paramwise_cfg", None)
    with OPTIM_WRAPPER_CONSTRUCTORS.switch_scope_and_registry(None) as registry:
        constructor_cls = resolve_type(constructor_type, registry, optim_wrapper_cfg, "constructor")
    constructor = OPTIM_WRAPPER_CONSTRUCTORS.build(
        dict(type=constructor_cls, optim_wrapper_cfg=optim_wrapper_cfg, paramwise_cfg=paramwise_cfg)
    )
    return constructor(model)
