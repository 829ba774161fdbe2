"""Metrics and the evaluator used by ``ValLoop`` and ``TestLoop``."""

from .evaluator import Evaluator
from .metric import BaseMetric

__all__ = ["BaseMetric", "Evaluator"]
