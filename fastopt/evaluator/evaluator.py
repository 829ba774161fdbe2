"""``Evaluator``: runs several metrics over the same predictions (MMEngine semantics)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastopt.registry import EVALUATOR, METRICS

from .metric import BaseMetric


@EVALUATOR.register_module()
class Evaluator:
    """A list of metrics fed the same batches.

    Args:
        metrics: a metric (object or config from ``METRICS``) or a list of them.
    """

    def __init__(self, metrics: dict | BaseMetric | Sequence[dict | BaseMetric]) -> None:
        self._dataset_meta: dict | None = None
        if not isinstance(metrics, Sequence):
            metrics = [metrics]  # type: ignore[list-item]
        self.metrics: list[BaseMetric] = []
        for metric in metrics:
            if isinstance(metric, dict):
                metric = METRICS.build(metric)
            if not hasattr(metric, "process") or not hasattr(metric, "evaluate"):
                raise TypeError(
                    f"an evaluator metric must have process() and evaluate(), got "
                    f"{type(metric).__name__}"
                )
            self.metrics.append(metric)  # type: ignore[arg-type]

    @property
    def dataset_meta(self) -> dict | None:
        """The dataset's ``metainfo``; setting it also sets it on every metric."""
        return self._dataset_meta

    @dataset_meta.setter
    def dataset_meta(self, dataset_meta: dict | None) -> None:
        self._dataset_meta = dataset_meta
        for metric in self.metrics:
            metric.dataset_meta = dataset_meta

    def process(self, data_samples: Sequence, data_batch: Any = None) -> None:
        """Hand one batch's predictions (and inputs) to every metric."""
        for metric in self.metrics:
            metric.process(data_batch, data_samples)

    def evaluate(self, size: int) -> dict[str, Any]:
        """Every metric's results, merged; two metrics may not produce the same name."""
        metrics: dict[str, Any] = {}
        for metric in self.metrics:
            result = metric.evaluate(size)
            duplicated = set(result) & set(metrics)
            if duplicated:
                raise ValueError(
                    f"There are multiple evaluation results with the same metric name "
                    f"{sorted(duplicated)}. Please make sure all metrics have different prefixes."
                )
            metrics.update(result)
        return metrics

    def __iter__(self) -> Iterator[BaseMetric]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)
