"""``MMDistributedDataParallel``: DDP that keeps the ``train_step`` protocol.

torch's ``DistributedDataParallel`` only synchronises gradients of a forward that goes through
the wrapper, so ``train_step`` must call the wrapper, not ``model.module``. This class does
exactly that for a :class:`~fastopt.model.BaseModel`; a plain ``nn.Module`` is wrapped in
torch's DDP and driven by :mod:`fastopt.model.steps`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from fastopt.registry import MODEL_WRAPPERS


@MODEL_WRAPPERS.register_module()
class MMDistributedDataParallel(DistributedDataParallel):
    """DDP with ``train_step``/``val_step``/``test_step`` of the wrapped model."""

    def train_step(self, data: Any, optim_wrapper: Any) -> dict[str, torch.Tensor]:
        with optim_wrapper.optim_context(self):
            data = self.module.data_preprocessor(data, training=True)
            losses = self._run_forward(data, mode="loss")
        loss, log_vars = self.module.parse_losses(losses)
        optim_wrapper.update_params(loss)
        return log_vars

    def val_step(self, data: Any) -> Any:
        return self.module.val_step(data)

    def test_step(self, data: Any) -> Any:
        return self.module.test_step(data)

    def _run_forward(self, data: Any, mode: str) -> Any:
        if isinstance(data, dict):
            return self(**data, mode=mode)
        if isinstance(data, (list, tuple)):
            return self(*data, mode=mode)
        raise TypeError(
            "the output of the data preprocessor must be a dict, a list or a tuple, but got "
            f"{type(data).__name__}"
        )
