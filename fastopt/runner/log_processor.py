"""``LogProcessor``: turns the message hub's scalars into MMEngine's log lines and tags.

Line formats (MMEngine's, so log parsers keep working)::

    Epoch(train) [1][2/4]  lr: 4.0000e-02  eta: 0:00:00  time: 0.0197  data_time: 0.0007  loss: 1.6942
    Iter(train) [ 3/10]  lr: 1.0000e-01  eta: 0:00:00  time: 0.0178  data_time: 0.0003  loss: 1.1956
    Epoch(val) [2][2/2]    acc: 0.4896  data_time: 0.0002  time: 0.0006

Scalars whose name matches ``mean_pattern`` (losses, times, grad_norm) are averaged over the
last ``window_size`` logged values; the others show their latest value. Values the optimizer
wrapper logged as tensors (``grad_norm``) are converted here, at log intervals only.
"""

from __future__ import annotations

import copy
import datetime
import re
from collections import OrderedDict
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fastopt.registry import LOG_PROCESSORS

if TYPE_CHECKING:
    from .runner import Runner


@LOG_PROCESSORS.register_module()
class LogProcessor:
    """Formats training, validation and test logs.

    Args:
        window_size: number of latest values averaged for ``mean_pattern`` scalars.
        by_epoch: ``Epoch(train) [e][i/n]`` headers (True) or ``Iter(train) [i/N]`` (False).
        custom_cfg: extra statistics, e.g. ``[dict(data_src='loss', method_name='mean',
            window_size='global', log_name='loss_global')]``; ``window_size`` may be an int,
            ``'epoch'`` or ``'global'``.
        num_digits: digits after the decimal point.
        log_with_hierarchy: keep ``train/``/``val/`` prefixes in the tags sent to backends.
        mean_pattern: regex of the scalars that are averaged over ``window_size``.
    """

    def __init__(
        self,
        window_size: int = 10,
        by_epoch: bool = True,
        custom_cfg: list[dict] | None = None,
        num_digits: int = 4,
        log_with_hierarchy: bool = False,
        mean_pattern: str = r".*(loss|time|data_time|grad_norm).*",
    ) -> None:
        if not isinstance(window_size, int) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, but got {window_size!r}")
        self.window_size = window_size
        self.by_epoch = by_epoch
        self.custom_cfg = list(custom_cfg) if custom_cfg else []
        self.num_digits = num_digits
        self.log_with_hierarchy = log_with_hierarchy
        self.mean_pattern = re.compile(mean_pattern)
        self._check_custom_cfg()

    # ---------------------------------------------------------------------------- lines
    def get_log_after_iter(
        self, runner: Runner, batch_idx: int, mode: str
    ) -> tuple[dict[str, Any], str]:
        """The tag (for vis backends) and the line logged after an iteration of ``mode``."""
        if mode not in ("train", "val", "test"):
            raise ValueError(f"mode must be 'train', 'val' or 'test', but got {mode!r}")
        parsed_cfg = self._parse_window_size(runner, batch_idx, self.custom_cfg)
        log_tag = self._collect_scalars(parsed_cfg, runner, mode)
        if self.log_with_hierarchy:
            tag = self._collect_scalars(parsed_cfg, runner, mode, reserve_prefix=True)
        else:
            tag = copy.deepcopy(log_tag)

        lr_items = []
        for key, value in tag.items():
            if key.endswith("lr"):
                short = _remove_prefix(key, f"{mode}/")
                log_tag.pop(short)
                lr_items.append(f"{short}: {value:.{self.num_digits}e}")
        lr_str = " ".join(lr_items)

        if self.by_epoch:
            length = self._dataloader_len(runner, mode)
            cur_iter = str(self._get_iter(runner, batch_idx)).rjust(len(str(length)))
            if mode in ("train", "val"):
                cur_epoch = self._get_epoch(runner, mode)
                if runner.train_loop_built:
                    epoch_str = f"[{cur_epoch}]".rjust(len(str(runner.max_epochs)) + 3)
                else:
                    epoch_str = f"[{cur_epoch}]"
                tag["epoch"] = cur_epoch
                log_str = f"Epoch({mode}){epoch_str}[{cur_iter}/{length}]  "
            else:
                log_str = f"Epoch({mode}) [{cur_iter}/{length}]  "
        elif mode == "train":
            cur_iter = str(self._get_iter(runner, batch_idx)).rjust(len(str(runner.max_iters)))
            log_str = f"Iter({mode}) [{cur_iter}/{runner.max_iters}]  "
        else:
            length = self._dataloader_len(runner, mode)
            cur_iter = str(batch_idx + 1).rjust(len(str(length)))
            log_str = f"Iter({mode}) [{cur_iter}/{length}]  "
        tag["iter"] = runner.iter + 1 if runner.train_loop_built else 0

        log_str += f"{lr_str}  "
        if (
            "time" in log_tag
            and "data_time" in log_tag
            and "eta" in runner.message_hub.runtime_info
        ):
            eta = runner.message_hub.get_info("eta")
            log_str += f"eta: {datetime.timedelta(seconds=int(eta))}  "
            log_str += (
                f"time: {log_tag.pop('time'):.{self.num_digits}f}  "
                f"data_time: {log_tag.pop('data_time'):.{self.num_digits}f}  "
            )
        if torch.cuda.is_available():
            memory = self._max_memory(runner)
            log_str += f"memory: {memory}  "
            tag["memory"] = memory

        if mode in ("train", "val"):
            items = []
            for name, value in log_tag.items():
                if mode == "val" and not name.startswith("val/loss"):
                    continue
                if isinstance(value, float):
                    value = f"{value:.{self.num_digits}f}"
                items.append(f"{name}: {value}")
            log_str += "  ".join(items)
        return tag, log_str

    def get_log_after_epoch(
        self, runner: Runner, batch_idx: int, mode: str, with_non_scalar: bool = False
    ) -> tuple[dict[str, Any], str]:
        """The tag and the summary line after a validation or test epoch (metrics, times)."""
        if mode not in ("val", "test"):
            raise ValueError(f"get_log_after_epoch only accepts 'val' or 'test', got {mode!r}")
        length = self._dataloader_len(runner, mode)
        if self.by_epoch:
            if mode == "val":
                log_str = f"Epoch({mode}) [{self._get_epoch(runner, mode)}][{length}/{length}]  "
            else:
                log_str = f"Epoch({mode}) [{length}/{length}]  "
        else:
            log_str = f"Iter({mode}) [{length}/{length}]  "

        custom_cfg = copy.deepcopy(self.custom_cfg)
        custom_keys = [_remove_prefix(cfg["data_src"], f"{mode}/") for cfg in custom_cfg]
        for key in ("time", "data_time"):
            if key not in custom_keys:  # average the times over the whole epoch
                custom_cfg.append(dict(data_src=key, window_size="epoch", method_name="mean"))
        parsed_cfg = self._parse_window_size(runner, batch_idx, custom_cfg)
        scalars = self._collect_scalars(parsed_cfg, runner, mode, self.log_with_hierarchy)
        non_scalars = self._collect_non_scalars(runner, mode)
        tag: OrderedDict[str, Any] = OrderedDict()
        time_tag: OrderedDict[str, Any] = OrderedDict()
        for key, value in scalars.items():
            if key in (f"{mode}/time", f"{mode}/data_time", "time", "data_time"):
                time_tag[key] = value
            else:
                tag[key] = value
        items = []
        for name, value in chain(tag.items(), non_scalars.items(), time_tag.items()):
            if isinstance(value, float):
                value = f"{value:.{self.num_digits}f}"
            if isinstance(value, (torch.Tensor, np.ndarray)):
                value = f"\n{value}\n"
            items.append(f"{name}: {value}")
        log_str += "  " + "  ".join(items)
        if with_non_scalar:
            tag.update(non_scalars)
        tag.update(time_tag)
        return dict(tag), log_str

    # ------------------------------------------------------------------------- helpers
    def _collect_scalars(
        self, custom_cfg: list[dict], runner: Runner, mode: str, reserve_prefix: bool = False
    ) -> OrderedDict[str, Any]:
        tag: OrderedDict[str, Any] = OrderedDict()
        mode_scalars: OrderedDict[str, Any] = OrderedDict()
        for key, buffer in runner.message_hub.log_scalars.items():
            if key.startswith(mode):
                name = key if reserve_prefix else _remove_prefix(key, f"{mode}/")
                mode_scalars[name] = buffer
        for key, buffer in mode_scalars.items():
            if self.mean_pattern.search(key) is not None:
                tag[key] = buffer.mean(self.window_size)
            else:
                tag[key] = buffer.current()
        for cfg in copy.deepcopy(custom_cfg):
            data_src = cfg.pop("data_src")
            log_name = cfg.pop("log_name", data_src)
            if reserve_prefix:
                data_src, log_name = f"{mode}/{data_src}", f"{mode}/{log_name}"
            if data_src in mode_scalars:
                method = cfg.pop("method_name", cfg.pop("method", "current"))
                window = cfg.pop("window_size", None)
                args = () if method == "current" else (window,)
                tag[log_name] = mode_scalars[data_src].statistics(method, *args)
        return tag

    def _collect_non_scalars(self, runner: Runner, mode: str) -> OrderedDict[str, Any]:
        infos: OrderedDict[str, Any] = OrderedDict()
        for key, value in runner.message_hub.runtime_info.items():
            if key.startswith(f"{mode}/"):
                name = key if self.log_with_hierarchy else _remove_prefix(key, f"{mode}/")
                infos[name] = value
        return infos

    def _check_custom_cfg(self) -> None:
        seen: set[str] = set()
        for cfg in self.custom_cfg:
            if "data_src" not in cfg:
                raise KeyError(f"each log_processor.custom_cfg entry needs 'data_src', got {cfg}")
            name = cfg.get("log_name", cfg["data_src"])
            if name in seen:
                raise ValueError(
                    f"log_processor.custom_cfg defines {name!r} twice; give one of them "
                    "another log_name"
                )
            seen.add(name)
            if not self.by_epoch and cfg.get("window_size") == "epoch":
                raise ValueError("window_size='epoch' needs log_processor.by_epoch=True")

    def _parse_window_size(self, runner: Runner, batch_idx: int, custom_cfg: list[dict]) -> list:
        parsed = copy.deepcopy(custom_cfg)
        for cfg in parsed:
            window = cfg.get("window_size")
            if window is None or isinstance(window, int):
                continue
            if window == "epoch":
                cfg["window_size"] = batch_idx + 1
            elif window == "global":
                cfg["window_size"] = runner.iter + 1
            else:
                raise TypeError(f"window_size should be int, epoch or global, but got {window!r}")
        return parsed

    def _get_iter(self, runner: Runner, batch_idx: int) -> int:
        return batch_idx + 1 if self.by_epoch else runner.iter + 1

    def _get_epoch(self, runner: Runner, mode: str) -> int:
        if mode == "train":
            return runner.epoch + 1
        # validation runs after the epoch counter was incremented
        return runner.epoch if runner.train_loop_built else 0

    def _dataloader_len(self, runner: Runner, mode: str) -> int:
        return len(getattr(runner, f"{mode}_loop").dataloader)

    def _max_memory(self, runner: Runner) -> int:
        device = getattr(runner.model, "output_device", None)
        memory = torch.cuda.max_memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        return int(memory / (1024 * 1024))


def _remove_prefix(string: str, prefix: str) -> str:
    return string[len(prefix) :] if string.startswith(prefix) else string
