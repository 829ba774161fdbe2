"""``LoggerHook``: log lines every ``interval`` iterations, scalars to the vis backends.

Lines are formatted by the runner's :class:`~fastopt.runner.LogProcessor` (MMEngine's
format); each logged training step is also written to the visualizer (``scalars.json`` and
``<timestamp>.json`` in ``<log_dir>/vis_data``, TensorBoard when configured) with
``step = iter + 1``. On an interactive terminal a progress bar shows the current loop.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from fastopt.dist import is_main_process
from fastopt.fileio.atomic import atomic_write
from fastopt.logging.progress import ProgressDisplay, is_interactive
from fastopt.registry import HOOKS

from .hook import DATA_BATCH, Hook

if TYPE_CHECKING:
    from fastopt.runner import Runner


def _check_local(args: dict | None, name: str) -> None:
    if args is not None and args.get("backend", "local") not in ("local", "disk"):
        raise ValueError(
            f"{name}={args} selects a remote storage backend; fastopt writes to local paths only"
        )


@HOOKS.register_module()
class LoggerHook(Hook):
    """Logs training/validation/test progress and writes scalars to the visualizer.

    Args:
        interval: log every ``interval`` iterations (of the epoch, or global when training by
            iterations).
        ignore_last: skip the last iterations of an epoch that do not fill an interval.
        interval_exp_name: log the experiment name every this many iterations.
        out_dir: copy the log files (``out_suffix``) to ``out_dir/<work_dir name>`` after the
            run.
        out_suffix: suffixes of the files copied to ``out_dir``.
        keep_local: keep the local copies after copying them to ``out_dir``.
        file_client_args, backend_args: only local storage is supported (None or
            ``dict(backend='local')``).
        log_metric_by_epoch: validation metrics use the epoch as their step (else the
            iteration).
        progress_bar: show a progress bar: None = on an interactive terminal only.
    """

    priority = "BELOW_NORMAL"

    def __init__(
        self,
        interval: int = 10,
        ignore_last: bool = True,
        interval_exp_name: int = 1000,
        out_dir: str | os.PathLike | None = None,
        out_suffix: str | Sequence[str] = (".json", ".log", ".py", "yaml"),
        keep_local: bool = True,
        file_client_args: dict | None = None,
        log_metric_by_epoch: bool = True,
        backend_args: dict | None = None,
        progress_bar: bool | None = None,
    ) -> None:
        for name, value in (("interval", interval), ("interval_exp_name", interval_exp_name)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an integer, but got {value!r}")
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, but got {value!r}")
        for name, value in (("ignore_last", ignore_last), ("keep_local", keep_local)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, but got {value!r}")
        if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
            raise TypeError(f"out_dir must be a str, a path or None, but got {out_dir!r}")
        if isinstance(out_suffix, str):
            out_suffix = (out_suffix,)  # one suffix, not its characters
        if not isinstance(out_suffix, Sequence) or not all(isinstance(s, str) for s in out_suffix):
            raise TypeError(
                f"out_suffix should be a str or a sequence of str, but got {out_suffix!r}"
            )
        if file_client_args is not None and out_dir is None:
            raise ValueError('file_client_args should be "None" when `out_dir` is not specified.')
        if not keep_local and out_dir is None:
            raise ValueError("keep_local=False would delete the logs: it needs an out_dir")
        if file_client_args is not None and backend_args is not None:
            raise ValueError(
                '"file_client_args" and "backend_args" cannot be set at the same time.'
            )
        _check_local(file_client_args, "file_client_args")
        _check_local(backend_args, "backend_args")
        self.interval = interval
        self.ignore_last = ignore_last
        self.interval_exp_name = interval_exp_name
        self.out_dir = os.fspath(out_dir) if out_dir is not None else None
        self.out_suffix = tuple(out_suffix)
        self.keep_local = keep_local
        self.log_metric_by_epoch = log_metric_by_epoch
        self.progress_bar = progress_bar
        self._progress: ProgressDisplay | None = None
        self._copy_dir: str | None = None
        self.json_log_path = "scalars_run.json"

    # ------------------------------------------------------------------------ run
    def before_run(self, runner: Runner) -> None:
        self._copy_dir = None
        if self.out_dir is not None:  # a separate attribute: before_run runs for each phase
            name = os.path.basename(runner.work_dir.rstrip(os.sep))
            self._copy_dir = os.path.join(self.out_dir, name)
        self.json_log_path = f"{runner.timestamp}.json"
        show = is_interactive() if self.progress_bar is None else self.progress_bar
        self._progress = ProgressDisplay() if show and is_main_process() else None

    def after_run(self, runner: Runner) -> None:
        if self._progress is not None:
            self._progress.close()
        runner.visualizer.close()
        runner.flush_logs()
        if self._copy_dir is None or not is_main_process():
            return
        copied = []
        for root, _, files in os.walk(runner.log_dir):
            for name in files:
                if not name.endswith(self.out_suffix):
                    continue
                local = os.path.join(root, name)
                target = os.path.join(self._copy_dir, os.path.relpath(local, runner.log_dir))
                with open(local, "rb") as src:
                    data = src.read()
                # fsynced and renamed into place before keep_local=False removes the original
                atomic_write(target, lambda f, data=data: f.write(data))
                copied.append(local)
                runner.logger.info(f"The file {local} has been uploaded to {target}.")
        if not self.keep_local:
            runner.logger.info(f"{copied} were removed because keep_local=False")
            runner.close_log_file()
            for path in copied:
                os.remove(path)

    # ---------------------------------------------------------------------- train
    def before_train(self, runner: Runner) -> None:
        if self._progress is not None:
            self._progress.start("train", "train", runner.max_iters, runner.iter)

    def after_train(self, runner: Runner) -> None:
        if self._progress is not None:
            self._progress.finish("train")

    def after_train_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: dict | None = None,
    ) -> None:
        if self._progress is not None:
            self._progress.advance("train")
        loader = runner.train_dataloader
        if self.every_n_train_iters(runner, self.interval_exp_name) or self.end_of_epoch(
            loader, batch_idx
        ):
            runner.logger.info(f"Exp name: {runner.experiment_name}")
        if not (
            self.every_n_inner_iters(batch_idx, self.interval)
            or (
                self.end_of_epoch(loader, batch_idx)
                and (not self.ignore_last or len(loader) <= self.interval)
            )
        ):
            return
        tag, log_str = runner.log_processor.get_log_after_iter(runner, batch_idx, "train")
        runner.logger.info(log_str)
        runner.visualizer.add_scalars(tag, step=runner.iter + 1, file_path=self.json_log_path)

    # ------------------------------------------------------------------ val / test
    def before_val_epoch(self, runner: Runner) -> None:
        if self._progress is not None:
            self._progress.start("val", "val", len(runner.val_dataloader))

    def before_test_epoch(self, runner: Runner) -> None:
        if self._progress is not None:
            self._progress.start("test", "test", len(runner.test_dataloader))

    def after_val_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | None = None,
    ) -> None:
        self._after_eval_iter(runner, batch_idx, "val")

    def after_test_iter(
        self,
        runner: Runner,
        batch_idx: int,
        data_batch: DATA_BATCH = None,
        outputs: Sequence | None = None,
    ) -> None:
        self._after_eval_iter(runner, batch_idx, "test")

    def _after_eval_iter(self, runner: Runner, batch_idx: int, mode: str) -> None:
        if self._progress is not None:
            self._progress.advance(mode)
        if self.every_n_inner_iters(batch_idx, self.interval):
            _, log_str = runner.log_processor.get_log_after_iter(runner, batch_idx, mode)
            runner.logger.info(log_str)

    def after_val_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        if self._progress is not None:
            self._progress.finish("val")
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.val_dataloader), "val"
        )
        runner.logger.info(log_str)
        if not runner.train_loop_built:
            step = 0
        elif self.log_metric_by_epoch:
            step = runner.epoch
        else:
            step = runner.iter
        runner.visualizer.add_scalars(tag, step=step, file_path=self.json_log_path)

    def after_test_epoch(self, runner: Runner, metrics: dict[str, Any] | None = None) -> None:
        if self._progress is not None:
            self._progress.finish("test")
        tag, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), "test", with_non_scalar=True
        )
        runner.logger.info(log_str)
        if is_main_process():
            path = os.path.join(runner.log_dir, self.json_log_path)
            with open(path, "w", encoding="utf-8") as f:
                json.dump(_plain(tag), f)


def _plain(tag: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in tag.items():
        if hasattr(value, "tolist"):
            value = value.tolist()
        out[key] = value
    return out
