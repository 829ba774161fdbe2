"""Metrics and the evaluator used by ``ValLoop`` and ``TestLoop``."""

from .accuracy import Accuracy
from .evaluator import Evaluator
from .metric import BaseMetric

__all__ = ["Accuracy", "BaseMetric", "Evaluator"]
