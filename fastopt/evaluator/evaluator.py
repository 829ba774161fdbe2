"""``Evaluator``: runs several metrics over the same predictions (MMEngine semantics)."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from fastopt.dataset import pseudo_collate
from fastopt.registry import EVALUATOR, METRICS

from .metric import BaseMetric


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


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

    def offline_evaluate(
        self, data_samples: Sequence, data: Sequence | None = None, chunk_size: int = 1
    ) -> dict[str, Any]:
        """Metrics of saved predictions: ``data_samples`` (and their inputs ``data``, one
        per sample) are processed ``chunk_size`` at a time, then evaluated (MMEngine's API)."""
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if data is not None and len(data) != len(data_samples):
            raise ValueError(
                "data_samples and data should have the same length, but got data_samples "
                f"length: {len(data_samples)} data length: {len(data)}"
            )
        data_chunks = _chunks(data, chunk_size) if data is not None else None
        size = 0
        for outputs in _chunks(data_samples, chunk_size):
            batch = pseudo_collate(next(data_chunks)) if data_chunks is not None else None
            size += len(outputs)
            self.process(outputs, batch)
        return self.evaluate(size)

    def __iter__(self) -> Iterator[BaseMetric]:
        return iter(self.metrics)

    def __len__(self) -> int:
        return len(self.metrics)


def get_metric_value(indicator: str, metrics: dict[str, Any]) -> Any:
    """The value of metric ``indicator`` in ``metrics``: a full name (``'coco/AP'``) or a
    name without its prefix (``'AP'``) that matches exactly one metric."""
    if "/" in indicator:
        if indicator in metrics:
            return metrics[indicator]
        raise ValueError(f'The indicator "{indicator}" can not match any metric in {list(metrics)}')
    matched = [k for k in metrics if k.split("/")[-1] == indicator]
    if not matched:
        raise ValueError(f"The indicator {indicator} can not match any metric in {list(metrics)}")
    if len(matched) > 1:
        raise ValueError(f'The indicator "{indicator}" matches multiple metrics {matched}')
    return metrics[matched[0]]
