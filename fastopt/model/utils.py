"""Small model helpers: recognising and unwrapping DDP-style wrappers, converting
BatchNorm layers to and from SyncBatchNorm."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from fastopt.registry import MODEL_WRAPPERS


def is_model_wrapper(model: nn.Module) -> bool:
    """Whether ``model`` wraps another module in ``.module`` (DDP, DP, registered wrappers)."""
    if isinstance(model, (DistributedDataParallel, DataParallel)):
        return True
    wrappers = tuple(cls for cls in MODEL_WRAPPERS.module_dict.values() if isinstance(cls, type))
    return bool(wrappers) and isinstance(model, wrappers)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a wrapper (the model itself if it is not wrapped)."""
    while is_model_wrapper(model):
        model = model.module  # type: ignore[assignment]
    return model


class _BatchNormXd(nn.modules.batchnorm._BatchNorm):
    """A BatchNorm for inputs of any rank: what a SyncBatchNorm (which accepts any rank)
    becomes in a single-process run."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        return


def _copy_norm_state(source: nn.Module, target: nn.Module) -> nn.Module:
    """``target`` sharing ``source``'s parameters and buffers (so an optimizer built on
    the old layer still updates the new one), mode and qconfig."""
    if source.affine:
        target.weight = source.weight
        target.bias = source.bias
    target.running_mean = source.running_mean
    target.running_var = source.running_var
    target.num_batches_tracked = source.num_batches_tracked
    target.training = source.training
    if hasattr(source, "qconfig"):
        target.qconfig = source.qconfig
    return target


def _norm_args(module: nn.Module) -> tuple:
    return (
        module.num_features,
        module.eps,
        module.momentum,
        module.affine,
        module.track_running_stats,
    )


def revert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every ``SyncBatchNorm`` replaced by an equivalent BatchNorm layer.

    SyncBatchNorm needs a process group; the runner calls this in a single-process run,
    as MMEngine does. Returns the converted module (``module`` itself unless it is a
    SyncBatchNorm).
    """
    out = module
    if isinstance(module, nn.SyncBatchNorm):
        out = _copy_norm_state(module, _BatchNormXd(*_norm_args(module)))
    for name, child in module.named_children():
        out.add_module(name, revert_sync_batchnorm(child))
    return out


def convert_sync_batchnorm(module: nn.Module, implementation: str = "torch") -> nn.Module:
    """``module`` with every BatchNorm layer replaced by ``torch.nn.SyncBatchNorm``
    (``cfg.sync_bn='torch'`` in a distributed run); ``'mmcv'`` uses mmcv's, if installed."""
    if implementation == "torch":
        sync_cls: type = nn.SyncBatchNorm
    elif implementation == "mmcv":
        try:
            from mmcv.ops import SyncBatchNorm as sync_cls  # type: ignore[no-redef]
        except ImportError as e:
            raise ImportError("sync_bn='mmcv' needs mmcv with its compiled ops") from e
    else:
        raise ValueError(f'sync_bn should be "torch" or "mmcv", but got {implementation!r}')
    return _convert_batchnorm(module, sync_cls)


def _convert_batchnorm(module: nn.Module, sync_cls: type) -> nn.Module:
    out = module
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, sync_cls):
        out = _copy_norm_state(module, sync_cls(*_norm_args(module)))
    for name, child in module.named_children():
        out.add_module(name, _convert_batchnorm(child, sync_cls))
    return out
