"""One process of a 2-process gloo run (started by tests/test_runner_dist.py like torchrun).

Trains the toy model with ``launcher='pytorch'``, then saves what the test compares.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import runner_toys as toys  # noqa: E402

from fastopt.hooks import Hook  # noqa: E402
from fastopt.runner import Runner  # noqa: E402
from fastopt.dist import get_rank  # noqa: E402


class SeenSamples(Hook):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        self.seen.extend(x[0].item() for x in data_batch["inputs"])


def main(work_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    seen = SeenSamples()
    runner = Runner(
        **toys.make_cfg(
            work_dir,
            launcher="pytorch",
            train_cfg=dict(by_epoch=True, max_epochs=2),
            custom_hooks=[seen, dict(type="SyncBuffersHook")],
            default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
            val_evaluator=dict(type="RunnerToyAccuracy"),
            log_level="INFO",
        )
    )
    runner.train()
    metrics = runner.val()
    model = runner.model.module
    torch.save(
        dict(
            rank=get_rank(),
            world_size=runner.world_size,
            wrapper=type(runner.model).__name__,
            state=model.state_dict(),
            seen=seen.seen,
            metrics=metrics,
            log_dir=runner.log_dir,
            experiment_name=runner.experiment_name,
        ),
        Path(out_dir) / f"rank{get_rank()}.pth",
    )
    # both ranks finish their files before the group goes away (gloo aborts on a torn down peer)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
