"""Build a ``DataLoader`` from an MMEngine-style config, and position one for a resume.

``dict(batch_size=8, num_workers=2, dataset=dict(type=...), sampler=dict(type='DefaultSampler',
shuffle=True), collate_fn=dict(type='default_collate'))``: the dataset comes from
``DATASETS``, the sampler from ``DATA_SAMPLERS`` (with the run's seed), the collate function
from ``FUNCTIONS`` (default ``pseudo_collate``, as in MMEngine).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Mapping
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset

from fastopt.dist import get_rank, get_world_size
from fastopt.registry import DATA_SAMPLERS, DATASETS, FUNCTIONS, resolve_type

logger = logging.getLogger(__name__)


def worker_init_fn(worker_id: int, num_workers: int, rank: int, seed: int) -> None:
    """Seed a loader worker with ``num_workers * rank + worker_id + seed`` (MMEngine's rule)."""
    worker_seed = num_workers * rank + worker_id + seed
    np.random.seed(worker_seed % 2**32)
    random.seed(worker_seed)
    torch.manual_seed(worker_seed)


class SlicedDataset(Dataset):
    """The first ``length`` samples of ``dataset``; other attributes (``metainfo``, ...) are
    the dataset's. What ``num_batch_per_epoch`` builds."""

    def __init__(self, dataset: Any, length: int) -> None:
        self._dataset = dataset
        self._length = min(length, len(dataset))

    def __getattr__(self, name: str) -> Any:
        if name == "_dataset":  # not set yet (unpickling in a loader worker)
            raise AttributeError(name)
        return getattr(self._dataset, name)

    def __getitem__(self, idx: int) -> Any:
        return self._dataset[idx]  # samplers draw indices below len(self)

    def __len__(self) -> int:
        return self._length


def _batch_size(cfg: Mapping[str, Any]) -> int:
    if "batch_size" in cfg:
        return cfg["batch_size"]
    batch_sampler = cfg.get("batch_sampler")
    if isinstance(batch_sampler, Mapping) and "batch_size" in batch_sampler:
        return batch_sampler["batch_size"]
    raise ValueError(
        "num_batch_per_epoch needs the batch size: set batch_size in the dataloader config "
        "or in its batch_sampler"
    )


def _function(cfg: Any, key: str) -> Callable:
    if callable(cfg):
        return cfg
    if not isinstance(cfg, Mapping):
        raise TypeError(f"{key} should be a dict or a callable, but got {type(cfg).__name__}")
    cfg = dict(cfg)
    if "type" not in cfg:
        raise KeyError(f"{key} needs a 'type', got {cfg}")
    # a pkg:: base gives its dicts a _scope_ (MMEngine): resolve there, never pass it on
    with FUNCTIONS.switch_scope_and_registry(cfg.pop("_scope_", None)) as registry:
        fn = resolve_type(cfg.pop("type"), registry, cfg, "type")
    return partial(fn, **cfg) if cfg else fn


def build_dataloader(
    dataloader: DataLoader | Mapping[str, Any],
    seed: int | None = None,
    diff_rank_seed: bool = False,
) -> DataLoader:
    """Build a ``DataLoader`` from a config (a built one is returned as it is).

    Args:
        dataloader: the config: ``dataset`` and ``sampler`` (configs or objects), optional
            ``batch_sampler``, ``collate_fn``, ``worker_init_fn``, ``num_batch_per_epoch``
            (use only the first that many batches per rank of the dataset) and
            ``DataLoader`` arguments.
        seed: the run's seed: default seed of the sampler and base of the worker seeds.
        diff_rank_seed: ranks use different seeds; the sampler then draws its own shared
            seed (a sampler must order the data the same way on every rank).

    The loader gets a private ``torch.Generator``, so starting an epoch does not consume the
    global torch RNG (which would make a resumed run draw different dropout masks).
    """
    if isinstance(dataloader, DataLoader):
        return dataloader
    if not isinstance(dataloader, Mapping):
        raise TypeError(
            f"a dataloader must be a DataLoader or a config dict, got {type(dataloader).__name__}"
        )
    cfg = copy.deepcopy(dict(dataloader))
    if "dataset" not in cfg:
        raise KeyError(f"the dataloader config needs a 'dataset', got keys {sorted(cfg)}")
    dataset_cfg = cfg.pop("dataset")
    if isinstance(dataset_cfg, Mapping):
        dataset = DATASETS.build(dataset_cfg)
        if hasattr(dataset, "full_init"):
            dataset.full_init()
    else:
        dataset = dataset_cfg

    # a quick run over part of the data (MMEngine's key): each rank's epoch is cut to
    # num_batch_per_epoch batches
    num_batch_per_epoch = cfg.pop("num_batch_per_epoch", None)
    if num_batch_per_epoch is not None:
        if isinstance(num_batch_per_epoch, bool) or not isinstance(num_batch_per_epoch, int):
            raise TypeError(
                f"num_batch_per_epoch should be a positive int, but got {num_batch_per_epoch!r}"
            )
        if num_batch_per_epoch <= 0:
            raise ValueError(
                f"num_batch_per_epoch should be a positive int, but got {num_batch_per_epoch}"
            )
        length = num_batch_per_epoch * _batch_size(cfg) * get_world_size()
        dataset = SlicedDataset(dataset, length)

    sampler_cfg = cfg.pop("sampler", None)
    if sampler_cfg is None:
        raise KeyError(
            "the dataloader config needs a 'sampler', e.g. sampler=dict(type='DefaultSampler', "
            "shuffle=True)"
        )
    if isinstance(sampler_cfg, Mapping):
        sampler = DATA_SAMPLERS.build(
            sampler_cfg, default_args=dict(dataset=dataset, seed=None if diff_rank_seed else seed)
        )
    else:
        sampler = sampler_cfg

    batch_sampler_cfg = cfg.pop("batch_sampler", None)
    if isinstance(batch_sampler_cfg, Mapping):
        if "batch_size" not in cfg:
            raise KeyError("a batch_sampler config needs the dataloader's batch_size")
        batch_sampler = DATA_SAMPLERS.build(
            batch_sampler_cfg, default_args=dict(sampler=sampler, batch_size=cfg.pop("batch_size"))
        )
    else:
        batch_sampler = batch_sampler_cfg

    if "worker_init_fn" in cfg:
        init_fn: Callable | None = _function(cfg.pop("worker_init_fn"), "worker_init_fn")
    elif seed is not None:
        init_fn = partial(
            worker_init_fn, num_workers=cfg.get("num_workers", 0), rank=get_rank(), seed=seed
        )
    else:
        init_fn = None
    cfg.pop("disable_subprocess_warning", None)
    collate_fn = _function(cfg.pop("collate_fn", dict(type="pseudo_collate")), "collate_fn")
    generator = torch.Generator()
    generator.manual_seed(0 if seed is None else seed)
    cfg.setdefault("generator", generator)
    try:
        return DataLoader(
            dataset=dataset,
            sampler=sampler if batch_sampler is None else None,
            batch_sampler=batch_sampler,
            collate_fn=collate_fn,
            worker_init_fn=init_fn,
            **cfg,
        )
    except TypeError as e:
        raise TypeError(
            f"cannot build the DataLoader from the config keys {sorted(cfg)}: {e}"
        ) from e


def _index_sampler(dataloader: DataLoader) -> tuple[Any, int | None]:
    """The per-sample sampler and the batch size, when batches are plain consecutive chunks."""
    batch_sampler = dataloader.batch_sampler
    if batch_sampler is None:  # batch_size=None: the loader yields single samples
        return dataloader.sampler, 1
    if type(batch_sampler) is BatchSampler:
        return batch_sampler.sampler, batch_sampler.batch_size
    return None, None  # a custom batch sampler may group samples any way it likes


def loader_sampler(dataloader: Any) -> Any:
    """The sampler that orders the samples (the batch sampler's, when there is one)."""
    batch_sampler = getattr(dataloader, "batch_sampler", None)
    inner = getattr(batch_sampler, "sampler", None)
    return inner if inner is not None else getattr(dataloader, "sampler", None)


def set_start_batch(dataloader: DataLoader, batches: int) -> bool:
    """Make the next pass over ``dataloader`` start after ``batches`` batches, if possible.

    Works when the sampler has ``set_start_index`` (fastopt's samplers) and batches are
    consecutive chunks of the sampler's order; returns False otherwise, and the caller must
    skip batches by drawing them.
    """
    sampler, batch_size = _index_sampler(dataloader)
    if sampler is None or batch_size is None or not hasattr(sampler, "set_start_index"):
        return False
    sampler.set_start_index(batches * batch_size)
    return True
