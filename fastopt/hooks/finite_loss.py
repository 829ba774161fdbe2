"""Find the first training iteration whose loss is nan or inf, and report it once.

A diverged run (``lr=float('nan')``, or one far too large) otherwise goes on for hours,
logging ``loss: nan`` in lines that look like every other line. :class:`RuntimeInfoHook`
(a default hook) runs this check after every training iteration: the first non-finite value
of a ``loss*`` key is logged as a warning that names the iteration, and with
``check_finite=True`` (the default) training then stops with :class:`NonFiniteLossError`.

Losses on an accelerator are compared on the device every iteration and read back every
:data:`DEVICE_READ_INTERVAL` iterations (and before validation, at each epoch start and at
the end), so the check adds no host synchronisation per step; the iteration it reports is
still the first bad one. CPU losses and Python numbers are checked at once.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fastopt.runner import Runner

DEVICE_READ_INTERVAL = 50


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became nan or inf."""


class FiniteLossCheck:
    """The state of the check for one run.

    Args:
        stop: after the warning, raise :class:`NonFiniteLossError` (True) or go on (False).
    """

    #: devices whose values are read at once (reading them costs no device sync)
    host_devices: tuple[str, ...] = ("cpu",)

    def __init__(self, stop: bool = True) -> None:
        if not isinstance(stop, bool):
            raise TypeError(f"check_finite must be True or False, but got {stop!r}")
        self.stop = stop
        self.reported = False
        # key -> (first bad iteration or -1, value there), both 0-dim tensors on the device
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._unread = 0

    def update(self, runner: Runner, outputs: Mapping[str, Any] | None) -> None:
        """Check the ``loss*`` entries of one training iteration's outputs."""
        if self.reported or not isinstance(outputs, Mapping):
            return
        iteration = runner.iter
        for key, value in outputs.items():
            if "loss" not in str(key):
                continue
            if isinstance(value, torch.Tensor):
                if value.numel() != 1:
                    continue
                if value.device.type not in self.host_devices:
                    self._track_on_device(str(key), value, iteration)
                    continue
            if isinstance(value, (torch.Tensor, numbers.Real)):
                number = float(value)
                if not math.isfinite(number):
                    self._report(runner, str(key), number, iteration)
                    return
        if self._pending:
            self._unread += 1
            if self._unread >= DEVICE_READ_INTERVAL:
                self.flush(runner)

    def _track_on_device(self, key: str, value: torch.Tensor, iteration: int) -> None:
        value = value.detach().float().reshape(())
        first, first_value = self._pending.get(key) or (
            torch.full((), -1, dtype=torch.int64, device=value.device),
            torch.zeros((), device=value.device),
        )
        new = torch.logical_and(~torch.isfinite(value), first < 0)
        self._pending[key] = (
            torch.where(new, iteration, first),
            torch.where(new, value, first_value),
        )

    def flush(self, runner: Runner) -> None:
        """Read the device-side results (one host sync) and report the first bad loss."""
        if not self._pending or self.reported:
            return
        found = []
        for key, (first, value) in self._pending.items():
            iteration = int(first)
            if iteration >= 0:
                found.append((iteration, key, float(value)))
        self._pending.clear()
        self._unread = 0
        if found:
            iteration, key, value = min(found)
            self._report(runner, key, value, iteration)

    def _report(self, runner: Runner, key: str, value: float, iteration: int) -> None:
        self.reported = True
        where = f"training iteration {iteration + 1}"
        try:
            epoch_length = len(runner.train_dataloader)
        except (TypeError, AttributeError, RuntimeError):
            epoch_length = 0
        if epoch_length and type(runner.train_loop).__name__ != "IterBasedTrainLoop":
            epoch, batch = divmod(iteration, epoch_length)
            where += f" (epoch {epoch + 1}, batch {batch + 1}/{epoch_length})"
        message = f"{key} is {value} at {where}: the run has diverged"
        try:
            lrs = runner.optim_wrapper.get_lr()
            message += " (" + ", ".join(f"{k}={v[0]:.4g}" for k, v in lrs.items()) + ")"
        except (AttributeError, TypeError, IndexError, KeyError, ValueError):
            pass
        if self.stop:
            message += (
                ". Training stopped; to only warn, set "
                "default_hooks.runtime_info.check_finite=False."
            )
            runner.logger.warning(message)
            raise NonFiniteLossError(message)
        runner.logger.warning(message + "; training goes on (check_finite=False).")
