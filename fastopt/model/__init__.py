"""Models the runner trains: ``BaseModel`` / ``BaseModule``, data preprocessors, averaged
models, DDP wrapper, SyncBatchNorm conversion, and small classifiers for the example configs."""

from . import fsdp  # noqa: F401  (registers model_wrapper_cfg type 'FullyShard')
from .averaged_model import (
    BaseAveragedModel,
    ExponentialMovingAverage,
    MomentumAnnealingEMA,
    StochasticWeightAverage,
)
from .base_model import BaseModel, parse_losses
from .base_module import BaseModule, ModuleDict, ModuleList, Sequential
from .data_preprocessor import BaseDataPreprocessor, ImgDataPreprocessor, cast_data, stack_batch
from .utils import convert_sync_batchnorm, is_model_wrapper, revert_sync_batchnorm, unwrap_model
from .wrappers import MMDistributedDataParallel
from .zoo import ClsDataPreprocessor, SmallCNN, TinyViT

__all__ = [
    "BaseAveragedModel",
    "BaseDataPreprocessor",
    "BaseModel",
    "BaseModule",
    "ClsDataPreprocessor",
    "ExponentialMovingAverage",
    "ImgDataPreprocessor",
    "MMDistributedDataParallel",
    "ModuleDict",
    "ModuleList",
    "MomentumAnnealingEMA",
    "Sequential",
    "SmallCNN",
    "StochasticWeightAverage",
    "TinyViT",
    "cast_data",
    "convert_sync_batchnorm",
    "is_model_wrapper",
    "parse_losses",
    "revert_sync_batchnorm",
    "stack_batch",
    "unwrap_model",
]
