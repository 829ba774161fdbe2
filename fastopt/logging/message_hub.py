"""The message hub: where training components leave scalars and runtime facts for others.

The optimizer wrapper records ``train/grad_norm``, the runner records ``iter``/``epoch``, the
logger reads them back; none of them holds a reference to the others. Same API as MMEngine's
``MessageHub`` for what a runner and its hooks use, with two differences that matter:

* a one-element tensor given to :meth:`MessageHub.update_scalar` is kept as a tensor and
  converted when read (see :class:`HistoryBuffer`), so logging does not force a device sync
  every step;
* :meth:`MessageHub.state_dict` holds only plain Python values, so a checkpoint that contains
  it loads with ``torch.load(weights_only=True)`` (MMEngine's does not, open-mmlab/mmengine#1655).
"""

from __future__ import annotations

import collections.abc
import copy
import logging
import numbers
from typing import Any

import numpy as np
import torch

from fastopt.logging.history_buffer import HistoryBuffer, Scalar, check_scalar
from fastopt.logging.manager import ManagerMixin

logger = logging.getLogger(__name__)

_STATE_KEYS = ("log_scalars", "runtime_info", "resumed_keys")


def _to_plain(value: Any) -> Any:
    """``value`` built from None/bool/int/float/str/list/tuple/str-keyed dict, or raise TypeError.

    numpy arrays and tensors become (nested lists of) Python numbers; other sequences and
    sets, such as a deque, become lists.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)):
        return _to_plain(value.tolist())
    if isinstance(value, str):
        return str(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, dict):
        if not all(isinstance(k, (str, int)) for k in value):
            raise TypeError("dict keys must be str or int")
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_to_plain(v) for v in value)
    if isinstance(value, (collections.abc.Sequence, collections.abc.Set)):
        return [_to_plain(v) for v in value]
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not a plain type")


class MessageHub(ManagerMixin):
    """Scalars with history (``log_scalars``) and latest-value facts (``runtime_info``).

    Create or fetch one with ``MessageHub.get_instance(name)``; components built later capture
    ``MessageHub.get_current_instance()`` (the last one created, or a hub named ``'fastopt'``
    if none exists yet). ``resumed_keys`` says which keys go into :meth:`state_dict`.
    """

    def __init__(
        self,
        name: str,
        log_scalars: dict[str, HistoryBuffer] | None = None,
        runtime_info: dict[str, Any] | None = None,
        resumed_keys: dict[str, bool] | None = None,
    ) -> None:
        super().__init__(name)
        self._log_scalars: dict[str, HistoryBuffer] = dict(log_scalars or {})
        self._runtime_info: dict[str, Any] = dict(runtime_info or {})
        self._resumed_keys: dict[str, bool] = dict(resumed_keys or {})
        for key, buffer in self._log_scalars.items():
            if not isinstance(buffer, HistoryBuffer):
                raise TypeError(
                    f"log_scalars[{key!r}] must be a HistoryBuffer, got {type(buffer).__name__}"
                )
        for key in self._resumed_keys:
            if key not in self._log_scalars and key not in self._runtime_info:
                raise KeyError(
                    f"resumed_keys has {key!r}, which is in neither log_scalars nor runtime_info"
                )

    @classmethod
    def get_current_instance(cls) -> MessageHub:
        """The hub created last; a hub named ``'fastopt'`` is created if there is none."""
        if not cls._instance_dict:
            cls.get_instance("fastopt")
        return super().get_current_instance()

    # ----------------------------------------------------------------------------- scalars
    def update_scalar(self, key: str, value: Scalar, count: int = 1, resumed: bool = True) -> None:
        """Append ``value`` to the history of ``key``; a tensor is converted lazily."""
        value = check_scalar(key, value)
        self._set_resumed_key(key, resumed)
        buffer = self._log_scalars.get(key)
        if buffer is None:
            buffer = self._log_scalars[key] = HistoryBuffer()
        buffer.update(value, count)

    def update_scalars(self, log_dict: dict[str, Any], resumed: bool = True) -> None:
        """:meth:`update_scalar` for each item; a value may be ``dict(value=v, count=n)``."""
        if not isinstance(log_dict, dict):
            raise TypeError(f"log_dict must be a dict, but got {type(log_dict).__name__}")
        for key, value in log_dict.items():
            if isinstance(value, dict):
                if "value" not in value:
                    raise KeyError(f"{key!r}: a dict value must contain 'value', got {value!r}")
                self.update_scalar(key, value["value"], value.get("count", 1), resumed)
            else:
                self.update_scalar(key, value, 1, resumed)

    def get_scalar(self, key: str) -> HistoryBuffer:
        """The history of ``key`` (a reference, not a copy)."""
        if key not in self._log_scalars:
            raise KeyError(
                f"{key} is not found in Messagehub.log_buffers: instance name is: "
                f"{self.instance_name}"
            )
        return self._log_scalars[key]

    @property
    def log_scalars(self) -> dict[str, HistoryBuffer]:
        """All histories, by key."""
        return self._log_scalars

    # -------------------------------------------------------------------------- runtime info
    def update_info(self, key: str, value: Any, resumed: bool = True) -> None:
        """Set runtime information ``key`` (overwrites the previous value)."""
        self._set_resumed_key(key, resumed)
        self._runtime_info[key] = value

    def update_info_dict(self, info_dict: dict[str, Any], resumed: bool = True) -> None:
        """:meth:`update_info` for each item."""
        if not isinstance(info_dict, dict):
            raise TypeError(f"info_dict must be a dict, but got {type(info_dict).__name__}")
        for key, value in info_dict.items():
            self.update_info(key, value, resumed)

    def get_info(self, key: str, default: Any = None) -> Any:
        """Runtime information ``key``, or ``default`` if it was never set."""
        return self._runtime_info.get(key, default)

    def pop_info(self, key: str, default: Any = None) -> Any:
        """Remove and return runtime information ``key`` (``default`` if absent)."""
        return self._runtime_info.pop(key, default)

    @property
    def runtime_info(self) -> dict[str, Any]:
        """All runtime information, by key."""
        return self._runtime_info

    def _set_resumed_key(self, key: str, resumed: bool) -> None:
        previous = self._resumed_keys.setdefault(key, resumed)
        if previous != resumed:
            raise ValueError(
                f"{key} used to be resumed={previous}, but got resumed={resumed} now; "
                "resumed keys cannot be changed"
            )

    # ---------------------------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """Resumable scalars and info as plain Python values (safe for weights_only loads).

        Runtime information that is not made of plain values (after turning numpy/tensor
        scalars into numbers and deques/sets into lists) is left out with a warning.
        """
        scalars = {
            key: buffer.state_dict()
            for key, buffer in self._log_scalars.items()
            if self._resumed_keys.get(key, False)
        }
        info: dict[str, Any] = {}
        for key, value in self._runtime_info.items():
            if not self._resumed_keys.get(key, False):
                continue
            try:
                info[key] = _to_plain(value)
            except TypeError as err:
                logger.warning("message hub info %r is not saved: %s", key, err)
        resumed = {key: True for key in (*scalars, *info)}
        return {"log_scalars": scalars, "runtime_info": info, "resumed_keys": resumed}

    def load_state_dict(self, state_dict: dict[str, Any] | MessageHub) -> None:
        """Restore what :meth:`state_dict` returned (keys present here are overwritten).

        A ``MessageHub`` is accepted too (old checkpoints pickled the whole hub): all of its
        scalars, info and resumed keys are copied. Runtime information that cannot be
        deep-copied is kept by reference, with a warning, as MMEngine does.
        """
        if isinstance(state_dict, MessageHub):
            state_dict = {
                "log_scalars": state_dict.log_scalars,
                "runtime_info": state_dict.runtime_info,
                "resumed_keys": state_dict._resumed_keys,
            }
        missing = [k for k in _STATE_KEYS if k not in state_dict]
        if missing:
            raise KeyError(
                f"a MessageHub state dict must contain {list(_STATE_KEYS)}; missing {missing}"
            )
        for key, value in state_dict["log_scalars"].items():
            if isinstance(value, HistoryBuffer):
                self._log_scalars[key] = copy.deepcopy(value)
            elif isinstance(value, dict):
                self._log_scalars[key] = HistoryBuffer.from_state_dict(value)
            else:
                logger.warning("message hub scalar %r is not a history; it is not resumed", key)
        for key, value in state_dict["runtime_info"].items():
            try:
                self._runtime_info[key] = copy.deepcopy(value)
            except Exception:  # any object may refuse to be copied; keep the object itself
                logger.warning(
                    "message hub info %r (%s) cannot be deep-copied; keeping a reference to it",
                    key,
                    type(value).__name__,
                )
                self._runtime_info[key] = value
        for key, value in state_dict["resumed_keys"].items():
            if key in self._log_scalars or key in self._runtime_info:
                self._resumed_keys[key] = bool(value)
            else:
                logger.warning("resumed key %r is not in the loaded state; it is skipped", key)

    def __repr__(self) -> str:
        return (
            f"MessageHub(name={self.instance_name!r}, scalars={sorted(self._log_scalars)}, "
            f"info={sorted(self._runtime_info)})"
        )
