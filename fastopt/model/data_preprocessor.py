"""``BaseDataPreprocessor``: moves a batch from the loader to the model's device.

Applied inside ``train_step``/``val_step``/``test_step`` of :class:`~fastopt.model.BaseModel`.
The device follows the model: ``model.to('cuda')`` (or any ``.cuda()``/``.half()``...) updates
it, so the batch always lands where the parameters are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fastopt.registry import MODELS


def cast_data(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``data`` with every tensor (and tensor-like ``.to`` object) moved to ``device``.

    Dicts, lists, tuples and namedtuples are rebuilt with the same type; strings and other
    leaves are returned as they are.
    """
    if isinstance(data, Mapping):
        moved = {key: cast_data(value, device, non_blocking) for key, value in data.items()}
        try:
            return type(data)(moved)
        except TypeError:
            return moved
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(cast_data(v, device, non_blocking) for v in data))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        items = [cast_data(v, device, non_blocking) for v in data]
        return tuple(items) if isinstance(data, tuple) else items
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if hasattr(data, "to") and callable(data.to) and not isinstance(data, nn.Module):
        # data samples of downstream libraries (e.g. BaseDataElement) implement .to(device)
        return data.to(device)
    return data


@MODELS.register_module()
class BaseDataPreprocessor(nn.Module):
    """Moves every tensor of a batch to the model's device; does nothing else.

    Args:
        non_blocking: pass ``non_blocking=True`` to ``Tensor.to`` (pinned-memory loaders).
    """

    def __init__(self, non_blocking: bool = False) -> None:
        super().__init__()
        self._non_blocking = non_blocking
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        """Where batches are moved to."""
        return self._device

    def set_device(self, device: torch.device | str) -> None:
        """Set :attr:`device` (the owning model calls this when it moves)."""
        self._device = torch.device(device)

    def cast_data(self, data: Any) -> Any:
        """``data`` moved to :attr:`device`."""
        return cast_data(data, self._device, self._non_blocking)

    def forward(self, data: Any, training: bool = False) -> Any:
        """Preprocess a batch (here: move it); ``training`` tells train from val/test."""
        return self.cast_data(data)
