"""``ValLoop`` and ``TestLoop``: predictions for every batch, then the evaluator's metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from itertools import chain
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader

from fastopt.evaluator import Evaluator
from fastopt.model.steps import test_step, val_step
from fastopt.registry import LOOPS

from .base_loop import BaseLoop

if TYPE_CHECKING:
    from fastopt.runner import Runner


def _autocast(model: torch.nn.Module, enabled: bool) -> Any:
    if not enabled:
        return nullcontext()
    tensor = next(chain(model.parameters(), model.buffers()), None)
    device_type = tensor.device.type if tensor is not None else "cpu"
    return torch.autocast(device_type=device_type)


class _EvalLoop(BaseLoop):
    mode = "val"

    def __init__(
        self,
        runner: Runner,
        dataloader: DataLoader | Mapping[str, Any],
        evaluator: Evaluator | dict | Sequence,
        fp16: bool = False,
    ) -> None:
        super().__init__(runner, dataloader)
        self.evaluator = runner.build_evaluator(evaluator)
        metainfo = getattr(getattr(self.dataloader, "dataset", None), "metainfo", None)
        if metainfo is not None:
            self.evaluator.dataset_meta = metainfo
        self.fp16 = fp16

    def run(self) -> dict[str, Any]:
        """Run every batch, then return the evaluator's metrics."""
        runner, mode = self.runner, self.mode
        runner.call_hook(f"before_{mode}")
        runner.call_hook(f"before_{mode}_epoch")
        runner.model.eval()
        for idx, data_batch in enumerate(self.dataloader):
            self.run_iter(idx, data_batch)
        metrics = self.evaluator.evaluate(len(self.dataloader.dataset))
        runner.call_hook(f"after_{mode}_epoch", metrics=metrics)
        runner.call_hook(f"after_{mode}")
        return metrics

    @torch.no_grad()
    def run_iter(self, idx: int, data_batch: Any) -> None:
        """Predict one batch and hand it to the evaluator."""
        runner, mode = self.runner, self.mode
        runner.call_hook(f"before_{mode}_iter", batch_idx=idx, data_batch=data_batch)
        step = val_step if mode == "val" else test_step
        with _autocast(runner.model, self.fp16):
            outputs = step(runner.model, data_batch)
        self.evaluator.process(data_samples=outputs, data_batch=data_batch)
        runner.call_hook(
            f"after_{mode}_iter", batch_idx=idx, data_batch=data_batch, outputs=outputs
        )


@LOOPS.register_module()
class ValLoop(_EvalLoop):
    """Validation: ``model.val_step`` on every batch, metrics from ``evaluator``.

    Args:
        runner: the runner.
        dataloader: the validation dataloader or its config.
        evaluator: an ``Evaluator``, a metric config, or a list of them.
        fp16: run the forward under autocast.
    """

    mode = "val"


@LOOPS.register_module()
class TestLoop(_EvalLoop):
    """Testing: ``model.test_step`` on every batch, metrics from ``evaluator``.

    Args:
        runner: the runner.
        dataloader: the test dataloader or its config.
        evaluator: an ``Evaluator``, a metric config, or a list of them.
        fp16: run the forward under autocast.
    """

    mode = "test"
