"""Small model helpers: recognising and unwrapping DDP-style wrappers."""

from __future__ import annotations

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
