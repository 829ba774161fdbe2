"""Models the runner trains: ``BaseModel``, data preprocessors, averaged models, DDP wrapper."""

from .averaged_model import (
    BaseAveragedModel,
    ExponentialMovingAverage,
    MomentumAnnealingEMA,
    StochasticWeightAverage,
)
from .base_model import BaseModel, parse_losses
from .data_preprocessor import BaseDataPreprocessor, cast_data
from .utils import is_model_wrapper, unwrap_model
from .wrappers import MMDistributedDataParallel

__all__ = [
    "BaseAveragedModel",
    "BaseDataPreprocessor",
    "BaseModel",
    "ExponentialMovingAverage",
    "MMDistributedDataParallel",
    "MomentumAnnealingEMA",
    "StochasticWeightAverage",
    "cast_data",
    "is_model_wrapper",
    "parse_losses",
    "unwrap_model",
]
