"""Models the runner trains: ``BaseModel``, data preprocessors, averaged models, DDP wrapper,
and small classifiers for the example configs."""

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
from .zoo import ClsDataPreprocessor, SmallCNN, TinyViT

__all__ = [
    "BaseAveragedModel",
    "BaseDataPreprocessor",
    "BaseModel",
    "ClsDataPreprocessor",
    "ExponentialMovingAverage",
    "MMDistributedDataParallel",
    "MomentumAnnealingEMA",
    "SmallCNN",
    "StochasticWeightAverage",
    "TinyViT",
    "cast_data",
    "is_model_wrapper",
    "parse_losses",
    "unwrap_model",
]
