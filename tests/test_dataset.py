"""Samplers (order, epochs, start index, state), collate functions, dataloader building."""

from __future__ import annotations

import itertools
import random
from collections import namedtuple

import numpy as np
import pytest
import runner_toys as toys
import torch
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler

from fastopt.dataset import (  # noqa: E402
    DefaultSampler,
    InfiniteSampler,
    build_dataloader,
    default_collate,
    pseudo_collate,
    set_start_batch,
    worker_init_fn,
)
from fastopt.registry import DATA_SAMPLERS, FUNCTIONS  # noqa: E402

DATA = list(range(10))


# -------------------------------------------------------------------------- DefaultSampler
def test_default_sampler_orders_by_seed_and_epoch():
    a, b = DefaultSampler(DATA, seed=3), DefaultSampler(DATA, seed=3)
    first = list(a)
    assert sorted(first) == DATA and first == list(b) and first == list(a)  # repeatable
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == DATA
    assert list(DefaultSampler(DATA, shuffle=False)) == DATA
    assert len(a) == 10


def test_default_sampler_start_index_is_one_shot_and_validated():
    sampler = DefaultSampler(DATA, seed=0)
    full = list(sampler)
    sampler.set_start_index(7)
    assert list(sampler) == full[7:]
    assert list(sampler) == full  # the next pass starts at 0 again
    with pytest.raises(ValueError, match="start index must be >= 0"):
        sampler.set_start_index(-1)


def test_default_sampler_state_dict_restores_the_order():
    sampler = DefaultSampler(DATA)  # seed drawn at random
    sampler.set_epoch(4)
    other = DefaultSampler(DATA, seed=sampler.seed + 1)
    other.load_state_dict(sampler.state_dict())
    assert other.state_dict() == {"seed": sampler.seed, "epoch": 4}
    assert list(other) == list(sampler)


# ------------------------------------------------------------------------- InfiniteSampler
def test_infinite_sampler_streams_permutation_after_permutation():
    sampler = InfiniteSampler(DATA, seed=5)
    stream = list(itertools.islice(iter(sampler), 30))
    cycles = [stream[:10], stream[10:20], stream[20:]]
    assert all(sorted(c) == DATA for c in cycles) and cycles[0] != cycles[1]
    assert list(itertools.islice(iter(InfiniteSampler(DATA, shuffle=False)), 12)) == DATA + [0, 1]
    sampler.set_epoch(3)  # accepted, changes nothing
    assert list(itertools.islice(iter(sampler), 30)) == stream


@pytest.mark.parametrize("start", [0, 3, 10, 17])
def test_infinite_sampler_start_index_jumps_into_the_stream(start):
    sampler = InfiniteSampler(DATA, seed=2)
    full = list(itertools.islice(iter(sampler), 40))
    sampler.set_start_index(start)
    assert list(itertools.islice(iter(sampler), 40 - start)) == full[start:]


def test_infinite_sampler_rejects_empty_datasets():
    with pytest.raises(ValueError, match="non-empty"):
        InfiniteSampler([])


# ------------------------------------------------------------------------------- collate
def test_pseudo_collate_transposes_without_stacking():
    Sample = namedtuple("Sample", "x label")
    batch = [dict(img=torch.ones(2), meta=dict(id=i), tag=("a", i)) for i in range(3)]
    out = pseudo_collate(batch)
    assert len(out["img"]) == 3 and isinstance(out["img"], list)
    assert out["meta"] == {"id": [0, 1, 2]}
    assert out["tag"] == (["a", "a", "a"], [0, 1, 2])
    named = pseudo_collate([Sample(torch.zeros(1), 1), Sample(torch.ones(1), 0)])
    assert isinstance(named, Sample) and named.label == [1, 0]
    with pytest.raises(RuntimeError, match="same number of fields"):
        pseudo_collate([(1, 2), (1,)])
    assert pseudo_collate([]) == []


def test_default_collate_stacks_and_functions_are_registered():
    out = default_collate([dict(x=torch.ones(2), y=1), dict(x=torch.zeros(2), y=0)])
    assert out["x"].shape == (2, 2) and torch.equal(out["y"], torch.tensor([1, 0]))
    assert FUNCTIONS.get("pseudo_collate") is pseudo_collate
    assert FUNCTIONS.get("default_collate") is default_collate
    assert DATA_SAMPLERS.get("DefaultSampler") is DefaultSampler


# ----------------------------------------------------------------------- build_dataloader
def test_build_dataloader_from_a_config():
    loader = build_dataloader(toys.loader(batch_size=4, n=8), seed=11)
    assert isinstance(loader.sampler, DefaultSampler) and loader.sampler.seed == 11
    batch = next(iter(loader))
    assert isinstance(batch["inputs"], list) and len(batch["inputs"]) == 4  # pseudo_collate
    stacked = build_dataloader(toys.loader(collate_fn=dict(type="default_collate")), seed=0)
    assert next(iter(stacked))["inputs"].shape == (4, 4)
    assert build_dataloader(loader) is loader
    # with per-rank seeds the sampler draws a seed shared by all ranks instead of the run's
    np.random.seed(0)
    drawn = build_dataloader(toys.loader(), seed=5, diff_rank_seed=True).sampler.seed
    np.random.seed(0)
    assert build_dataloader(toys.loader(), seed=6, diff_rank_seed=True).sampler.seed == drawn


def test_build_dataloader_does_not_touch_the_global_rng():
    loader = build_dataloader(toys.loader(), seed=0)
    state = torch.get_rng_state()
    list(loader)
    list(loader)
    assert torch.equal(torch.get_rng_state(), state)


@pytest.mark.parametrize(
    ("cfg", "error", "text"),
    [
        (dict(batch_size=2, sampler=dict(type="DefaultSampler")), KeyError, "needs a 'dataset'"),
        (dict(batch_size=2, dataset=dict(type="RunnerToyDataset")), KeyError, "needs a 'sampler'"),
        (
            dict(toys.loader(), collate_fn=dict(type="no_such_collate")),
            KeyError,
            "no_such_collate is not in the fastopt::function registry",
        ),
        (dict(toys.loader(), collate_fn=3), TypeError, "collate_fn should be a dict or a callable"),
        (dict(toys.loader(), batch_sizes=2), TypeError, "cannot build the DataLoader"),
    ],
)
def test_build_dataloader_errors(cfg, error, text):
    with pytest.raises(error, match=text):
        build_dataloader(cfg, seed=0)


def test_worker_init_fn_seeds_every_generator():
    worker_init_fn(1, num_workers=2, rank=1, seed=10)  # 2 * 1 + 1 + 10 = 13
    values = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(13)
    np.random.seed(13)
    torch.manual_seed(13)
    assert values == (random.random(), np.random.rand(), torch.rand(1).item())


def test_set_start_batch_skips_whole_batches_without_loading_them():
    dataset = toys.RunnerToyDataset(n=16)
    loader = DataLoader(
        dataset, batch_size=4, sampler=DefaultSampler(dataset, seed=0), collate_fn=default_collate
    )
    full = [b["inputs"] for b in loader]
    dataset.gets = 0
    assert set_start_batch(loader, 3)
    rest = [b["inputs"] for b in loader]
    assert len(rest) == 1 and torch.equal(rest[0], full[3]) and dataset.gets == 4
    # a custom batch sampler may group samples freely: no positioning
    custom = DataLoader(dataset, batch_sampler=_Pairs(SequentialSampler(dataset)))
    assert not set_start_batch(custom, 1)
    # torch's own samplers cannot start mid-epoch
    assert not set_start_batch(DataLoader(dataset, batch_size=4), 1)


class _Pairs(BatchSampler):
    def __init__(self, sampler):
        super().__init__(sampler, batch_size=2, drop_last=False)
