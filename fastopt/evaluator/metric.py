"""``BaseMetric``: accumulate per-batch results, compute metrics once per evaluation.

Same protocol as MMEngine's: ``process(data_batch, data_samples)`` appends to
``self.results``; ``compute_metrics(results)`` turns the results of the whole dataset into a
dict of numbers; ``evaluate(size)`` gathers the results of every rank in dataset order, drops
the padding the sampler added, and returns the metrics (prefixed with ``prefix/`` when set).
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Sequence
from typing import Any

from fastopt.dist import broadcast_object, collect_results, is_main_process

logger = logging.getLogger(__name__)


def is_finite_number(value: Any) -> bool:
    """False for a nan or infinite number (Python, numpy or one-element tensor); True for
    finite numbers and for anything that is not a number (those are not judged here)."""
    if isinstance(value, bool):
        return True
    if isinstance(value, numbers.Real):
        return math.isfinite(value)
    item = getattr(value, "item", None)
    size = getattr(value, "numel", None) or getattr(value, "size", None)
    if callable(item) and (size() if callable(size) else size) == 1:
        try:
            number = item()
        except (TypeError, ValueError, RuntimeError):
            return True
        return not isinstance(number, numbers.Real) or math.isfinite(number)
    return True


class BaseMetric:
    """Base class of metrics.

    Args:
        collect_device: kept for config compatibility (results are gathered as Python
            objects over the process group).
        prefix: prepended to every metric name as ``prefix/name`` (default:
            :attr:`default_prefix`).
        collect_dir: kept for config compatibility.
    """

    default_prefix: str | None = None

    def __init__(
        self,
        collect_device: str = "cpu",
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        if collect_device not in ("cpu", "gpu"):
            raise ValueError(f"collect_device must be 'cpu' or 'gpu', but got {collect_device!r}")
        self.collect_device = collect_device
        self.collect_dir = collect_dir
        self.results: list[Any] = []
        self.prefix = prefix or self.default_prefix
        self._dataset_meta: dict | None = None

    @property
    def dataset_meta(self) -> dict | None:
        """The dataset's ``metainfo`` (set by the evaluator)."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict | None) -> None:
        self._dataset_meta = dataset_meta

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Store what :meth:`compute_metrics` needs from one batch in ``self.results``."""
        raise NotImplementedError(f"{type(self).__name__} must implement process()")

    def compute_metrics(self, results: list) -> dict[str, Any]:
        """Metrics of the whole dataset from the collected ``results``."""
        raise NotImplementedError(f"{type(self).__name__} must implement compute_metrics()")

    def evaluate(self, size: int) -> dict[str, Any]:
        """Gather results from every rank, compute the metrics on rank 0, share them.

        Args:
            size: the dataset length (results beyond it are sampler padding).
        """
        if len(self.results) == 0:
            logger.warning(
                "%s got empty `self.results`. Please ensure that the processed results are "
                "properly added into `self.results` in `process` method.",
                type(self).__name__,
            )
        results = collect_results(self.results, size)
        metrics: dict[str, Any] | None = None
        if is_main_process():
            computed = self.compute_metrics(results)
            if not isinstance(computed, dict):
                raise TypeError(
                    f"{type(self).__name__}.compute_metrics must return a dict, got "
                    f"{type(computed).__name__}"
                )
            metrics = {f"{self.prefix}/{k}" if self.prefix else k: v for k, v in computed.items()}
            not_finite = [k for k, v in metrics.items() if not is_finite_number(v)]
            if not_finite:
                logger.warning(
                    "%s: %s not finite (nan or inf); the model may have diverged",
                    type(self).__name__,
                    ", ".join(f"{k}={metrics[k]}" for k in not_finite),
                )
        metrics = broadcast_object(metrics)
        self.results.clear()
        return metrics  # type: ignore[return-value]
