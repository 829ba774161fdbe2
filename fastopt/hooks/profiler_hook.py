"""``ProfilerHook``: a ``torch.profiler`` trace of the first epochs/iterations, in the work dir."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import torch

from fastopt.dist import get_rank
from fastopt.registry import HOOKS

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


@HOOKS.register_module()
class ProfilerHook(Hook):
    """Profile the first ``profile_times`` epochs (``by_epoch``) or iterations.

    Args:
        by_epoch: profile whole epochs (then only one) or iterations.
        profile_times: how many epochs/iterations to profile.
        activity_with_cpu, activity_with_cuda: profiler activities.
        schedule: arguments of ``torch.profiler.schedule`` (None: record every step).
        on_trace_ready: a callable, ``dict(type='log_trace', **table_kwargs)`` (print the
            operator table) or ``dict(type='tb_trace', dir_name=...)`` (TensorBoard trace
            files, relative to the log dir).
        record_shapes, profile_memory, with_stack, with_flops: ``torch.profiler.profile``
            options.
        json_trace_path: Chrome trace file (relative paths are in the log dir). Default:
            ``<log_dir>/profiler/trace_rank<r>.json`` unless ``on_trace_ready`` handles the
            trace. MMEngine writes no file by default; here the trace always lands in the
            work dir unless you choose another destination.
    """

    priority = "VERY_LOW"

    def __init__(
        self,
        *,
        by_epoch: bool = True,
        profile_times: int = 1,
        activity_with_cpu: bool = True,
        activity_with_cuda: bool = False,
        schedule: dict | None = None,
        on_trace_ready: Callable | dict | None = None,
        record_shapes: bool = False,
        profile_memory: bool = False,
        with_stack: bool = False,
        with_flops: bool = False,
        json_trace_path: str | None = None,
    ) -> None:
        if not isinstance(by_epoch, bool):
            raise TypeError("``by_epoch`` should be a boolean.")
        if profile_times < 1:
            raise ValueError(f"profile_times should be greater than 0, but got {profile_times}")
        if by_epoch and profile_times > 1:
            raise ValueError(
                f"Profiler will profile 0-{profile_times} epochs: profile one epoch at most "
                "(profiling slows training down), or set by_epoch=False"
            )
        if (
            on_trace_ready is not None
            and not callable(on_trace_ready)
            and not isinstance(on_trace_ready, dict)
        ):
            raise ValueError(
                f"``on_trace_ready`` should be a handler, or dict, or None, but got {on_trace_ready}"
            )
        self.by_epoch = by_epoch
        self.profile_times = profile_times
        self.activities = []
        if activity_with_cpu:
            self.activities.append(torch.profiler.ProfilerActivity.CPU)
        if activity_with_cuda:
            self.activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.schedule = torch.profiler.schedule(**schedule) if schedule is not None else None
        self.on_trace_ready = on_trace_ready
        self.record_shapes = record_shapes
        self.profile_memory = profile_memory
        self.with_stack = with_stack
        self.with_flops = with_flops
        self.json_trace_path = json_trace_path
        self.trace_file: str | None = None
        self._closed = True

    def before_run(self, runner: Runner) -> None:
        if not runner.train_loop_configured:
            return  # val()/test() runs: nothing to profile
        limit = runner.max_epochs if self.by_epoch else runner.max_iters
        if limit < self.profile_times:
            raise ValueError(f"``profile_times`` should not be greater than {limit}")
        self.profiler = torch.profiler.profile(
            activities=self.activities,
            schedule=self.schedule,
            on_trace_ready=self._parse_trace_config(runner),
            record_shapes=self.record_shapes,
            profile_memory=self.profile_memory,
            with_stack=self.with_stack,
            with_flops=self.with_flops,
        )
        if self.json_trace_path is not None:
            path = self.json_trace_path
            self.trace_file = path if os.path.isabs(path) else os.path.join(runner.log_dir, path)
        elif self.on_trace_ready is None:
            self.trace_file = os.path.join(
                runner.log_dir, "profiler", f"trace_rank{get_rank()}.json"
            )
        self.profiler.__enter__()
        self._closed = False
        runner.logger.info("profiler is profiling...")

    def _parse_trace_config(self, runner: Runner) -> Any:
        if self.on_trace_ready is None or callable(self.on_trace_ready):
            return self.on_trace_ready
        cfg = dict(self.on_trace_ready)
        kind = cfg.pop("type", None)
        if kind == "log_trace":

            def handler(profile: Any) -> None:
                runner.logger.info("\n" + profile.key_averages().table(**cfg))

            return handler
        if kind == "tb_trace":
            dir_name = cfg.get("dir_name", "tf_tracing_logs")
            cfg["dir_name"] = (
                dir_name if os.path.isabs(dir_name) else os.path.join(runner.log_dir, dir_name)
            )
            runner.logger.info(f"trace_files of ProfilerHook will be saved to {cfg['dir_name']}.")
            return torch.profiler.tensorboard_trace_handler(**cfg)
        raise ValueError(f'trace_type should be "log_trace" or "tb_trace", but got {kind}')

    def after_train_epoch(self, runner: Runner) -> None:
        if not self._closed:
            self._export(runner)

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        if self._closed:
            return
        self.profiler.step()
        if not self.by_epoch and runner.iter == self.profile_times - 1:
            self._export(runner)

    def after_run(self, runner: Runner) -> None:
        if not self._closed:  # training stopped early
            self._export(runner)

    def _export(self, runner: Runner) -> None:
        self._closed = True
        self.profiler.__exit__(None, None, None)
        if self.trace_file is not None:
            os.makedirs(os.path.dirname(self.trace_file), exist_ok=True)
            self.profiler.export_chrome_trace(self.trace_file)
            runner.logger.info(f"profiler trace written to {self.trace_file}")
