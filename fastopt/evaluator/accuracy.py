"""``Accuracy``: top-k classification accuracy in percent (MMPretrain's metric names)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from fastopt.registry import METRICS

from .metric import BaseMetric

logger = logging.getLogger(__name__)

# the rank recorded for a sample whose scores hold a nan: beyond every k
NOT_A_PREDICTION = 2**62


def _field(sample: Any, name: str) -> Any:
    if isinstance(sample, Mapping):
        return sample.get(name)
    return getattr(sample, name, None)


@METRICS.register_module()
class Accuracy(BaseMetric):
    """Share of samples whose label is among the ``k`` highest scores, in percent.

    Args:
        topk: one k or several; each gives ``accuracy/top{k}``.
        collect_device, prefix, collect_dir: see :class:`BaseMetric` (default prefix
            ``'accuracy'``).

    Predictions are per-sample dicts (or objects) with ``pred_score`` (class scores) or only
    ``pred_label`` (then just top-1), and ``gt_label``; a prediction without ``gt_label``
    takes the label from the batch's ``data_samples``. Scores with a nan (a diverged model)
    are not a prediction: the sample counts as wrong for every k, with a warning.
    """

    default_prefix = "accuracy"

    def __init__(
        self,
        topk: int | Sequence[int] = (1,),
        collect_device: str = "cpu",
        prefix: str | None = None,
        collect_dir: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        ks = (topk,) if isinstance(topk, int) else tuple(topk)
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"topk must be positive ints, but got {topk!r}")
        self.topk = ks

    def process(self, data_batch: Any, data_samples: Sequence) -> None:
        """Record, per sample, the rank of its label among the scores (capped at max k)."""
        batch_labels = data_batch.get("data_samples") if isinstance(data_batch, Mapping) else None
        for i, sample in enumerate(data_samples):
            label = _field(sample, "gt_label")
            if label is None and batch_labels is not None:
                label = batch_labels[i]
            if label is None:
                raise ValueError("Accuracy needs gt_label in the predictions or the batch")
            label = int(label)
            scores = _field(sample, "pred_score")
            if scores is not None:
                scores = torch.as_tensor(scores).float().flatten()
                if bool(torch.isnan(scores).any()):
                    # scores of a diverged model: no ranking, so never a hit (comparisons
                    # with nan are all False, which would make it rank 0)
                    rank = NOT_A_PREDICTION
                else:
                    # rank 0 = the best score; ties count against the sample (a constant
                    # prediction is not a hit)
                    rank = (
                        int((scores > scores[label]).sum())
                        + int((scores == scores[label]).sum())
                        - 1
                    )
            else:
                pred = _field(sample, "pred_label")
                if pred is None:
                    raise ValueError("Accuracy needs pred_score or pred_label in the predictions")
                if max(self.topk) > 1:
                    raise ValueError("top-k accuracy with k > 1 needs pred_score")
                rank = 0 if int(pred) == label else 1
            self.results.append(rank)

    def compute_metrics(self, results: list) -> dict[str, float]:
        """``{'top1': ..., 'top5': ...}`` in percent; samples with nan scores are misses."""
        if not results:
            return {f"top{k}": 0.0 for k in self.topk}
        ranks = torch.tensor(results)
        invalid = int((ranks == NOT_A_PREDICTION).sum())
        if invalid:
            logger.warning(
                "Accuracy: %d of %d predictions have nan scores (a diverged model?); they "
                "count as wrong",
                invalid,
                len(results),
            )
        return {f"top{k}": float((ranks < k).float().mean() * 100.0) for k in self.topk}
