"""``BaseModel``: MMEngine's model protocol (``train_step``/``val_step``/``test_step``).

The runner never calls ``forward`` itself; it calls ``train_step(data, optim_wrapper)``, which
preprocesses the batch, runs ``forward(..., mode='loss')`` inside
``optim_wrapper.optim_context`` (autocast, DDP ``no_sync`` while accumulating), sums the
losses with :meth:`BaseModel.parse_losses` and hands the total to
``optim_wrapper.update_params``. A model written for MMEngine's ``BaseModel`` works here by
changing its import.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from itertools import chain
from typing import Any, Callable

import torch
from torch import nn

from fastopt.registry import MODELS

from .base_module import BaseModule
from .data_preprocessor import BaseDataPreprocessor  # noqa: F401  (registers the default)


def parse_losses(losses: Mapping[str, Any]) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
    """Sum the entries whose name contains ``'loss'``; every entry is also logged.

    Each value is a tensor (its mean is taken) or a list of tensors (sum of their means).
    Returns ``(total_loss, log_vars)`` where ``log_vars`` starts with ``'loss'`` (the total)
    and holds detached tensors: they are converted to numbers only when a logger reads them.
    """
    if not isinstance(losses, Mapping):
        raise TypeError(
            f"the model must return a dict of losses in mode='loss', got {type(losses).__name__}"
        )
    log_vars: list[tuple[str, torch.Tensor]] = []
    for name, value in losses.items():
        if isinstance(value, torch.Tensor):
            log_vars.append((name, value.mean()))
        elif (
            isinstance(value, Sequence)
            and value
            and all(isinstance(v, torch.Tensor) for v in value)
        ):
            log_vars.append((name, sum(v.mean() for v in value)))  # type: ignore[misc]
        else:
            raise TypeError(
                f"{name} is not a tensor or list of tensors (got {type(value).__name__})"
            )
    loss_terms = [value for name, value in log_vars if "loss" in name]
    if not loss_terms:
        raise ValueError(
            f"the model's outputs {[n for n, _ in log_vars]} contain no entry with 'loss' in its "
            "name, so there is nothing to optimise"
        )
    loss = sum(loss_terms)  # type: ignore[assignment]
    out = OrderedDict([("loss", loss.detach())])  # type: ignore[union-attr]
    for name, value in log_vars:
        out[name] = value.detach()
    return loss, out  # type: ignore[return-value]


@MODELS.register_module()
class BaseModel(BaseModule):
    """Base class of models the runner trains.

    Args:
        data_preprocessor: a module or a config (built from ``MODELS``); default
            :class:`BaseDataPreprocessor` (moves batches to the model's device).
        init_cfg: kept for config compatibility; weights are initialised by
            ``init_weights`` (see :class:`~fastopt.model.BaseModule`), which the runner
            calls before training.

    Subclasses implement ``forward(inputs, data_samples=None, mode='tensor')`` returning a
    dict of losses for ``mode='loss'``, a list of predictions for ``'predict'`` and raw
    tensors for ``'tensor'``.
    """

    def __init__(
        self,
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | list | None = None,
    ) -> None:
        super().__init__(init_cfg)
        if data_preprocessor is None:
            data_preprocessor = dict(type="BaseDataPreprocessor")
        if isinstance(data_preprocessor, nn.Module):
            self.data_preprocessor = data_preprocessor
        elif isinstance(data_preprocessor, dict):
            self.data_preprocessor = MODELS.build(data_preprocessor)
        else:
            raise TypeError(
                "data_preprocessor should be a dict or an nn.Module, but got "
                f"{type(data_preprocessor).__name__}"
            )

    # -------------------------------------------------------------------------- steps
    def train_step(self, data: Any, optim_wrapper: Any) -> dict[str, torch.Tensor]:
        """One training iteration: preprocess, forward (``mode='loss'``), update.

        Returns the log variables (detached tensors) for the logger.
        """
        with optim_wrapper.optim_context(self):
            data = self.data_preprocessor(data, True)
            losses = self._run_forward(data, mode="loss")
        loss, log_vars = self.parse_losses(losses)
        optim_wrapper.update_params(loss)
        return log_vars

    def val_step(self, data: Any) -> list:
        """Predictions for a validation batch (``mode='predict'``)."""
        data = self.data_preprocessor(data, False)
        return self._run_forward(data, mode="predict")

    def test_step(self, data: Any) -> list:
        """Predictions for a test batch (``mode='predict'``)."""
        data = self.data_preprocessor(data, False)
        return self._run_forward(data, mode="predict")

    def parse_losses(
        self, losses: Mapping[str, Any]
    ) -> tuple[torch.Tensor, OrderedDict[str, torch.Tensor]]:
        """See :func:`parse_losses`; override to weight or filter losses."""
        return parse_losses(losses)

    def _run_forward(self, data: Any, mode: str) -> Any:
        """``self(**data, mode=mode)`` for a dict batch, ``self(*data, mode=mode)`` for a sequence."""
        if isinstance(data, dict):
            return self(**data, mode=mode)
        if isinstance(data, (list, tuple)):
            return self(*data, mode=mode)
        raise TypeError(
            "the output of the data preprocessor must be a dict, a list or a tuple, but got "
            f"{type(data).__name__}"
        )

    def forward(self, inputs: Any, data_samples: Any = None, mode: str = "tensor") -> Any:
        """Implemented by subclasses (see the class docstring)."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    # --------------------------------------------------------------------- device moves
    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> BaseModel:
        """Any ``.to``/``.cuda``/``.cpu`` also moves where the data preprocessor sends batches."""
        result = super()._apply(fn, *args, **kwargs)
        tensor = next(chain(self.parameters(), self.buffers()), None)
        if tensor is not None and hasattr(self.data_preprocessor, "set_device"):
            self.data_preprocessor.set_device(tensor.device)
        return result
