"""What a runner is built from: each ``build_*`` turns an object or its config into the object.

Functions of their arguments only (the :class:`~fastopt.runner.Runner` methods of the same
names pass its state in), so each can be read and tested on its own. Semantics are MMEngine's
``Runner.build_*``.
"""

from __future__ import annotations

import copy
import inspect
import logging
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from fastopt.constructor import build_optim_wrapper as build_with_constructor
from fastopt.evaluator import BaseMetric, Evaluator
from fastopt.logging import MessageHub
from fastopt.loops import BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop
from fastopt.model import (
    MMDistributedDataParallel,
    convert_sync_batchnorm,
    is_model_wrapper,
    revert_sync_batchnorm,
)
from fastopt.registry import (
    EVALUATOR,
    LOG_PROCESSORS,
    LOOPS,
    MODEL_WRAPPERS,
    MODELS,
    OPTIM_WRAPPERS,
    VISUALIZERS,
)
from fastopt.scheduler import _ParamScheduler, build_param_schedulers
from fastopt.visualization import Visualizer
from fastopt.wrapper import OptimWrapper, OptimWrapperDict

from .log_processor import LogProcessor


def check_group(**items: Any) -> None:
    """A phase needs its dataloader, loop config and optimizer/evaluator together."""
    given = [v is not None for v in items.values()]
    if any(given) and not all(given):
        shown = ", ".join(f"{k}={v!r}" for k, v in items.items())
        names = ", ".join(items)
        raise ValueError(f"{names} should be either all None or not None, but got {shown}.")


# ---------------------------------------------------------------------------------- model
def device() -> torch.device:
    """Where the model goes: the current GPU, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def build_model(model: nn.Module | Mapping) -> nn.Module:
    """``model`` itself, or the module its config describes."""
    if isinstance(model, nn.Module):
        return model
    if isinstance(model, Mapping):
        return MODELS.build(model)
    raise TypeError(f"model should be an nn.Module or a dict, but got {type(model).__name__}")


def wrap_model(
    model: nn.Module,
    model_wrapper_cfg: Mapping | None,
    distributed: bool,
    cfg: Mapping[str, Any],
    logger: logging.Logger,
) -> nn.Module:
    """Move the model to the device; in distributed training, wrap it in DDP.

    A ``BaseModel`` gets :class:`~fastopt.model.MMDistributedDataParallel` (keeps
    ``train_step``); a plain module torch's ``DistributedDataParallel``. ``cfg`` is the run's
    config (``sync_bn``, ``find_unused_parameters``).
    """
    if is_model_wrapper(model):
        if model_wrapper_cfg is not None:
            raise TypeError(
                "model has been wrapped and model_wrapper_cfg should be None, but got "
                f"{model_wrapper_cfg}"
            )
        return model
    dev = device()
    model = model.to(dev)
    if not distributed:
        # SyncBatchNorm needs a process group: in one process it is a plain BatchNorm
        if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
            logger.info(
                "Distributed training is not used: the SyncBatchNorm layers of the model "
                "are reverted to BatchNorm layers."
            )
            model = revert_sync_batchnorm(model)
        return model
    sync_bn = cfg.get("sync_bn")
    if sync_bn is not None:
        model = convert_sync_batchnorm(model, sync_bn)
    device_ids = [dev.index] if dev.type == "cuda" else None
    if model_wrapper_cfg is None:
        wrapper_cls = (
            MMDistributedDataParallel if hasattr(model, "train_step") else DistributedDataParallel
        )
        # buffers are not broadcast every forward (SyncBuffersHook averages them);
        # torch 2.13 renamed the switch and warns on the old name
        no_buffer_sync = (
            "forward_sync_buffers"
            if "forward_sync_buffers" in inspect.signature(wrapper_cls.__init__).parameters
            else "broadcast_buffers"
        )
        return wrapper_cls(
            module=model,
            device_ids=device_ids,
            find_unused_parameters=bool(cfg.get("find_unused_parameters", False)),
            **{no_buffer_sync: False},
        )
    wrapper_cfg = dict(model_wrapper_cfg)
    wrapper_cfg.setdefault("type", "MMDistributedDataParallel")
    wrapper_cfg.setdefault("device_ids", device_ids)
    return MODEL_WRAPPERS.build(wrapper_cfg, default_args=dict(module=model))


# --------------------------------------------------------------------------- optimization
def _wrappers(optim_wrapper: OptimWrapper) -> list[OptimWrapper]:
    if isinstance(optim_wrapper, OptimWrapperDict):
        return list(optim_wrapper.values())
    return [optim_wrapper]


def build_optim_wrapper(
    optim_wrapper: OptimWrapper | Mapping, model: nn.Module, message_hub: MessageHub
) -> OptimWrapper:
    """``optim_wrapper`` itself, or the wrapper (or ``OptimWrapperDict``) its config gives."""
    if isinstance(optim_wrapper, OptimWrapper):
        for wrapper in _wrappers(optim_wrapper):
            wrapper.message_hub = message_hub  # grad_norm must reach this run's logs
        return optim_wrapper
    if not isinstance(optim_wrapper, Mapping):
        raise TypeError(
            "optim_wrapper should be an OptimWrapper or a dict, but got "
            f"{type(optim_wrapper).__name__}"
        )
    # a ConfigDict's copy knows its config file and key, for error messages
    cfg = optim_wrapper.copy() if isinstance(optim_wrapper, dict) else dict(optim_wrapper)
    optimizer = cfg.get("optimizer")
    if isinstance(optimizer, torch.optim.Optimizer):
        cfg.setdefault("type", "OptimWrapper")
        return OPTIM_WRAPPERS.build(cfg)
    if optimizer is not None or "constructor" in cfg:
        return build_with_constructor(model, cfg)
    wrappers: OrderedDict[str, OptimWrapper] = OrderedDict()
    for name, optim in cfg.items():
        if not isinstance(optim, OptimWrapper):
            raise ValueError(
                'each item must be an optimizer wrapper when "type" and "constructor" are not '
                f"in optimizer, but got {name}={optim}"
            )
        wrappers[name] = optim
    return OptimWrapperDict(**wrappers)


def scale_lr(
    optim_wrapper: OptimWrapper,
    auto_scale_lr: Mapping | None,
    param_schedulers: Any,
    train_dataloader: Callable[[], DataLoader],
    world_size: int,
    logger: logging.Logger,
) -> None:
    """Linear scaling rule: every lr times ``world_size * batch_size / base_batch_size``.

    ``train_dataloader`` returns the training loader (called once the arguments are checked:
    getting it may build the training loop).
    """
    if auto_scale_lr is None or not auto_scale_lr.get("enable", False):
        return
    base = auto_scale_lr.get("base_batch_size")
    if not isinstance(base, int) or base <= 0:
        raise ValueError(
            "auto_scale_lr needs a positive int base_batch_size, e.g. "
            f"dict(enable=True, base_batch_size=256); got {auto_scale_lr}"
        )
    if isinstance(param_schedulers, list) and any(
        isinstance(s, _ParamScheduler) for s in param_schedulers
    ):
        raise RuntimeError(
            "`scale_lr` should be called before building ParamScheduler because "
            "ParamScheduler will store initial lr from optimizer wrappers"
        )
    loader = train_dataloader()
    batch_size = loader.batch_size
    if batch_size is None:
        batch_size = getattr(loader.batch_sampler, "batch_size", None)
    if batch_size is None:
        raise RuntimeError("auto_scale_lr cannot find the training batch size")
    ratio = world_size * batch_size / base
    for wrapper in _wrappers(optim_wrapper):
        for group in wrapper.param_groups:  # includes the base-settings pseudo group
            group["lr"] = group["lr"] * ratio
    logger.info(
        f"LR is scaled by {ratio:g} (world_size {world_size} x batch_size {batch_size} "
        f"/ base_batch_size {base})"
    )


def check_scheduler_cfg(param_scheduler: Any) -> None:
    """Fail early on a ``param_scheduler`` that is none of: a scheduler, a config, a list of
    them, or a dict of those per optimizer."""
    if param_scheduler is None or isinstance(param_scheduler, _ParamScheduler):
        return
    if isinstance(param_scheduler, Mapping):
        if "type" in param_scheduler:
            return
        for name, value in param_scheduler.items():  # one entry per optimizer
            if not isinstance(value, (Mapping, list, tuple, _ParamScheduler)):
                raise TypeError(
                    f"param_scheduler[{name!r}] should be a scheduler, a config or a list, "
                    f"but got {type(value).__name__}"
                )
        return
    if isinstance(param_scheduler, (list, tuple)):
        for item in param_scheduler:
            if not isinstance(item, (Mapping, _ParamScheduler)):
                raise TypeError(
                    "param_scheduler entries should be configs or schedulers, but got "
                    f"{type(item).__name__}"
                )
        return
    raise TypeError(
        "param_scheduler should be a scheduler, a config, or a list/dict of them, but got "
        f"{type(param_scheduler).__name__}"
    )


def build_param_scheduler(
    scheduler: Any, optim_wrapper: OptimWrapper, **lengths: Any
) -> list | dict:
    """The schedulers of every optimizer (a dict of lists for an ``OptimWrapperDict``).

    ``lengths`` (``epoch_length``, ``max_epochs``, ``max_iters``) give ``end`` its default,
    the training length.
    """
    if not isinstance(optim_wrapper, OptimWrapper):
        raise RuntimeError("build the optim_wrapper before the parameter schedulers")
    if not isinstance(optim_wrapper, OptimWrapperDict):
        return build_param_schedulers(scheduler, optim_wrapper, **lengths)
    per_name = isinstance(scheduler, Mapping) and "type" not in scheduler
    out: dict[str, list] = {}
    for name, wrapper in optim_wrapper.items():
        cfg = scheduler.get(name) if per_name else scheduler
        if cfg is None:
            continue
        out[name] = build_param_schedulers(cfg, wrapper, **lengths)
    return out


# ------------------------------------------------------------------------- data and loops
def build_evaluator(evaluator: Any) -> Evaluator:
    """An ``Evaluator`` from an evaluator, a config, or a list of metrics or configs."""
    if isinstance(evaluator, Evaluator):
        return evaluator
    if isinstance(evaluator, BaseMetric):
        # as in MMEngine; say how to make it one
        raise TypeError(
            f"evaluator should be an Evaluator, a dict or a list, but got the metric "
            f"{type(evaluator).__name__}: pass [metric] or Evaluator([metric])"
        )
    if isinstance(evaluator, Mapping):
        if "metrics" in evaluator:
            cfg = dict(evaluator)
            cfg.setdefault("type", "Evaluator")
            return EVALUATOR.build(cfg)
        return Evaluator(dict(evaluator))
    if isinstance(evaluator, Sequence):
        return Evaluator(list(evaluator))
    if hasattr(evaluator, "process") and hasattr(evaluator, "evaluate"):
        return evaluator  # an evaluator of another library
    raise TypeError(
        f"evaluator should be an Evaluator, a dict or a list, but got {type(evaluator).__name__}"
    )


def build_train_loop(loop: BaseLoop | Mapping, runner: Any, dataloader: Any) -> BaseLoop:
    """The training loop from ``train_cfg`` (``type`` or ``by_epoch``)."""
    if isinstance(loop, BaseLoop):
        return loop
    if not isinstance(loop, Mapping):
        raise TypeError(f"train_cfg should be a dict or a loop, but got {type(loop).__name__}")
    cfg = copy.deepcopy(dict(loop))
    if "type" in cfg and "by_epoch" in cfg:
        raise RuntimeError("Only one of `type` or `by_epoch` can exist in `loop_cfg`.")
    if "type" in cfg:
        return LOOPS.build(cfg, default_args=dict(runner=runner, dataloader=dataloader))
    if "by_epoch" not in cfg:
        raise KeyError(
            f"train_cfg needs `type` (e.g. 'EpochBasedTrainLoop') or `by_epoch`, got {sorted(cfg)}"
        )
    loop_cls = EpochBasedTrainLoop if cfg.pop("by_epoch") else IterBasedTrainLoop
    return loop_cls(**cfg, runner=runner, dataloader=dataloader)


def build_eval_loop(
    loop: Any, default: type, runner: Any, dataloader: Any, evaluator: Any, key: str
) -> BaseLoop:
    """A validation or test loop from ``val_cfg``/``test_cfg`` (``key``); ``default`` is the
    loop class when the config names no ``type``."""
    if isinstance(loop, BaseLoop):
        return loop
    if not isinstance(loop, Mapping):
        raise TypeError(f"{key} should be a dict or a loop, but got {type(loop).__name__}")
    cfg = copy.deepcopy(dict(loop))
    defaults = dict(runner=runner, dataloader=dataloader, evaluator=evaluator)
    if "type" in cfg:
        return LOOPS.build(cfg, default_args=defaults)
    return default(**cfg, **defaults)


# ------------------------------------------------------------------------------ reporting
def build_message_hub(message_hub: Mapping | None, name: str) -> MessageHub:
    """``MessageHub.get_instance(**message_hub)``, named ``name`` unless ``message_hub`` gives
    a ``name``."""
    if message_hub is None:
        message_hub = {}
    elif not isinstance(message_hub, Mapping):
        raise TypeError(
            f"message_hub should be a dict or None, but got {type(message_hub).__name__}"
        )
    cfg = dict(message_hub)
    cfg.setdefault("name", name)
    return MessageHub.get_instance(**cfg)


def build_log_processor(log_processor: LogProcessor | Mapping) -> LogProcessor:
    """A ``LogProcessor`` from its arguments (``type`` optional)."""
    if isinstance(log_processor, LogProcessor):
        return log_processor
    if not isinstance(log_processor, Mapping):
        raise TypeError(
            f"log_processor should be a LogProcessor or a dict, but got {type(log_processor)}"
        )
    cfg = dict(log_processor)
    cfg.setdefault("type", "LogProcessor")
    return LOG_PROCESSORS.build(cfg)


def build_visualizer(
    visualizer: Visualizer | Mapping | None, name: str, log_dir: str
) -> Visualizer:
    """The run's visualizer (default: JSON scalars in ``<log_dir>/vis_data``), named ``name``
    unless its config names it."""
    save_dir = os.path.join(log_dir, "vis_data")
    if visualizer is None:
        return Visualizer.get_instance(
            name, vis_backends=[dict(type="LocalVisBackend")], save_dir=save_dir
        )
    if isinstance(visualizer, Visualizer):
        return visualizer
    if isinstance(visualizer, Mapping):
        cfg = dict(visualizer)
        cfg.setdefault("type", "Visualizer")
        cfg["name"] = name if cfg.get("name") in (None, "visualizer") else cfg["name"]
        cfg.setdefault("save_dir", save_dir)
        return VISUALIZERS.build(cfg)  # a ManagerMixin: get_instance, with its _scope_
    raise TypeError(
        f"visualizer should be a Visualizer, a dict or None, but got {type(visualizer).__name__}"
    )
