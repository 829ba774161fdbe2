"""Samplers that split a dataset over ranks and can start mid-stream on resume.

Both samplers draw their order from ``seed`` and a counter only (``seed + epoch`` for
:class:`DefaultSampler`, ``seed + cycle`` for :class:`InfiniteSampler`), never from a generator
that advances as batches are drawn. So the order at any position is a pure function of the
position, and a resumed run jumps there with :meth:`set_start_index` instead of drawing and
discarding every batch already trained on (MMEngine replays the loader,
open-mmlab/mmengine#1520).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import Sampler

from fastopt.dist import get_dist_info, sync_random_seed
from fastopt.registry import DATA_SAMPLERS


class _ResumableSampler(Sampler[int]):
    """Shared state: rank split, seed, and a one-shot start index."""

    infinite: bool = False

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int | None = None) -> None:
        rank, world_size = get_dist_info()
        self.rank = rank
        self.world_size = world_size
        self.dataset = dataset
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else int(seed)
        self._start_index = 0

    def set_start_index(self, index: int) -> None:
        """Make the next ``iter()`` start at this rank's ``index``-th sample (one time only)."""
        if index < 0:
            raise ValueError(f"start index must be >= 0, but got {index}")
        self._start_index = int(index)

    def _take_start(self) -> int:
        start, self._start_index = self._start_index, 0
        return start

    def state_dict(self) -> dict[str, Any]:
        """The seed and counters that define the order (for checkpoints)."""
        return {"seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the order continues as in the saved run)."""
        self.seed = int(state["seed"])


@DATA_SAMPLERS.register_module()
class DefaultSampler(_ResumableSampler):
    """Each epoch, a (shuffled) pass over the dataset split between ranks.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: a new permutation each epoch (from ``seed + epoch``).
        seed: shuffling seed, the same on every rank; None draws one shared by all ranks.
        round_up: pad the index list by repeating it so every rank gets the same number of
            samples (needed for DDP); without it the first ranks may get one more.

    Call :meth:`set_epoch` before each epoch (``DistSamplerSeedHook`` does).
    """

    def __init__(
        self,
        dataset: Sized,
        shuffle: bool = True,
        seed: int | None = None,
        round_up: bool = True,
    ) -> None:
        super().__init__(dataset, shuffle, seed)
        self.round_up = round_up
        self.epoch = 0
        n = len(dataset)
        if round_up:
            self.num_samples = math.ceil(n / self.world_size)
            self.total_size = self.num_samples * self.world_size
        else:
            self.num_samples = math.ceil((n - self.rank) / self.world_size)
            self.total_size = n

    def _indices(self) -> list[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(n, generator=g).tolist()
        else:
            indices = list(range(n))
        if self.round_up and n > 0:
            indices = (indices * int(self.total_size / n + 1))[: self.total_size]
        return indices[self.rank : self.total_size : self.world_size]

    def __iter__(self) -> Iterator[int]:
        start = self._take_start()
        return iter(self._indices()[start:])

    def __len__(self) -> int:
        return self.num_samples

    def set_epoch(self, epoch: int) -> None:
        """Use the permutation of ``epoch``."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.epoch = int(state.get("epoch", self.epoch))


@DATA_SAMPLERS.register_module()
class InfiniteSampler(_ResumableSampler):
    """An endless stream: permutation after permutation of the dataset, split between ranks.

    Cycle ``c`` of the stream is the permutation drawn from ``seed + c``, so position ``p`` of
    the stream is known without drawing the ones before it. For ``IterBasedTrainLoop``.

    Args:
        dataset: the dataset (only its length is used).
        shuffle: shuffle each cycle; otherwise repeat ``0..n-1``.
        seed: shuffling seed, the same on every rank; None draws one shared by all ranks.
    """

    infinite = True

    def __init__(self, dataset: Sized, shuffle: bool = True, seed: int | None = None) -> None:
        super().__init__(dataset, shuffle, seed)
        self.size = len(dataset)
        if self.size == 0:
            raise ValueError("InfiniteSampler needs a non-empty dataset")

    def _cycle(self, cycle: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        g = torch.Generator()
        g.manual_seed(self.seed + cycle)
        return torch.randperm(self.size, generator=g).tolist()

    def _global_stream(self, start: int) -> Iterator[int]:
        cycle, offset = divmod(start, self.size)
        while True:
            yield from self._cycle(cycle)[offset:]
            cycle, offset = cycle + 1, 0

    def __iter__(self) -> Iterator[int]:
        # this rank's k-th sample is global position rank + k * world_size
        start = self._take_start()
        first = self.rank + start * self.world_size
        return itertools.islice(self._global_stream(first), 0, None, self.world_size)

    def __len__(self) -> int:
        """The dataset size (the stream itself never ends)."""
        return self.size

    def set_epoch(self, epoch: int) -> None:
        """Accepted for ``DistSamplerSeedHook``; the stream does not depend on epochs."""
