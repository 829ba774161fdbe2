"""Metrics and the evaluator used by ``ValLoop`` and ``TestLoop``."""

from .accuracy import Accuracy
from .evaluator import Evaluator, get_metric_value
from .metric import BaseMetric

__all__ = ["Accuracy", "BaseMetric", "Evaluator", "get_metric_value"]
