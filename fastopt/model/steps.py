"""How the loops run one step on any model: ``BaseModel`` protocol or a plain ``nn.Module``.

A model with ``train_step``/``val_step``/``test_step`` (a :class:`~fastopt.model.BaseModel`,
an MMEngine model, a DDP wrapper of one) is called through them. A plain ``nn.Module`` is
driven the same way without subclassing: its batch is moved to its device, passed as keyword
arguments (dict batch), positional arguments (tuple/list batch) or a single argument, and in
training its output -- a dict of losses, or a single loss tensor -- is summed by
:func:`~fastopt.model.base_model.parse_losses`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import chain
from typing import Any

import torch
from torch import nn

from .base_model import parse_losses
from .data_preprocessor import cast_data
from .utils import unwrap_model


def _device(model: nn.Module) -> torch.device:
    tensor = next(chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _call(model: nn.Module, data: Any) -> Any:
    data = cast_data(data, _device(model))
    if isinstance(data, Mapping):
        return model(**data)
    if isinstance(data, (list, tuple)):
        return model(*data)
    return model(data)


def has_step_methods(model: nn.Module) -> bool:
    """Whether ``model`` (or the module a wrapper holds) implements ``train_step``."""
    return hasattr(model, "train_step") or hasattr(unwrap_model(model), "train_step")


def train_step(model: nn.Module, data: Any, optim_wrapper: Any) -> dict[str, torch.Tensor]:
    """One training iteration of ``model`` on ``data``; returns the log variables."""
    if hasattr(model, "train_step"):
        return model.train_step(data, optim_wrapper=optim_wrapper)
    with optim_wrapper.optim_context(model):
        outputs = _call(model, data)
    if isinstance(outputs, torch.Tensor):
        outputs = {"loss": outputs}
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"{type(unwrap_model(model)).__name__} has no train_step, so its forward must return "
            f"a dict of losses or a loss tensor; it returned {type(outputs).__name__}"
        )
    loss, log_vars = parse_losses(outputs)
    optim_wrapper.update_params(loss)
    return log_vars


def val_step(model: nn.Module, data: Any) -> Any:
    """Predictions of ``model`` for a validation batch (no gradients)."""
    if hasattr(model, "val_step"):
        return model.val_step(data)
    return _call(model, data)


def test_step(model: nn.Module, data: Any) -> Any:
    """Predictions of ``model`` for a test batch (no gradients)."""
    if hasattr(model, "test_step"):
        return model.test_step(data)
    return _call(model, data)
