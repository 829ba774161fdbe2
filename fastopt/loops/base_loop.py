"""``BaseLoop``: a loop owns a dataloader and drives one phase (train, val or test)."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from torch.utils.data import DataLoader

if TYPE_CHECKING:
    from fastopt.runner import Runner


class BaseLoop:
    """Base of all loops.

    Args:
        runner: the runner the loop belongs to (its hooks are called through it).
        dataloader: a ``DataLoader`` or a config the runner builds (with its seed).
    """

    def __init__(self, runner: Runner, dataloader: DataLoader | Mapping[str, Any]) -> None:
        self._runner = runner
        if isinstance(dataloader, Mapping):
            self.dataloader = runner.build_dataloader(
                dataloader,
                seed=runner.seed,
                diff_rank_seed=runner.randomness_cfg.get("diff_rank_seed", False),
            )
        else:
            self.dataloader = dataloader

    @property
    def runner(self) -> Runner:
        return self._runner

    def run(self) -> Any:
        """Run the phase."""
        raise NotImplementedError

    def restore_progress(self, epoch: int, iter: int) -> None:
        """Continue a resumed run: ``epoch`` epochs and ``iter`` iterations are done.

        The runner calls it on its training loop when it resumes; the counters are the
        loop's own (``_epoch``/``_iter``, MMEngine's names, which training loops written for
        MMEngine keep too).
        """
        self._epoch = epoch
        self._iter = iter


def calc_dynamic_intervals(
    start_interval: int, dynamic_interval_list: Sequence[tuple[int, int]] | None = None
) -> tuple[list[int], list[int]]:
    """Milestones ``[0, m1, ...]`` and intervals ``[start, i1, ...]`` of ``dynamic_intervals``.

    ``dynamic_intervals=[(m1, i1), ...]`` means: validate every ``i1`` from milestone ``m1``
    on. Milestones must increase.
    """
    if dynamic_interval_list is None:
        return [0], [start_interval]
    milestones = [0]
    intervals = [start_interval]
    for item in dynamic_interval_list:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            raise ValueError(
                f"each dynamic_intervals entry must be (milestone, interval), got {item!r}"
            )
        milestone, interval = item
        if milestone <= milestones[-1]:
            raise ValueError(
                f"dynamic_intervals milestones must increase, got {milestone} after "
                f"{milestones[-1]}"
            )
        if interval <= 0:
            raise ValueError(f"dynamic_intervals intervals must be positive, got {interval}")
        milestones.append(milestone)
        intervals.append(interval)
    return milestones, intervals


def current_interval(milestones: list[int], intervals: list[int], progress: int) -> int:
    """The interval in force at ``progress`` (MMEngine looks it up at ``count + 1``)."""
    return intervals[bisect.bisect_right(milestones, progress) - 1]
