"""History of one logged scalar (loss, lr, grad_norm, ...) with windowed statistics.

Values may be Python numbers or one-element tensors. Tensors are kept as they are and turned
into floats only when the history is read, all pending ones at once (one host sync per device
and dtype), so that logging a GPU value every step, such as the gradient norm the optimizer
wrapper records, does not stall the device every step.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from typing import Any, Callable, ClassVar, Union

import numpy as np
import torch

Number = Union[int, float]
Scalar = Union[int, float, np.number, np.ndarray, torch.Tensor]

# Pending tensors are converted once this many have piled up even if nobody reads the buffer,
# so a run without a logger does not hold an unbounded number of device tensors.
_MAX_PENDING = 1024


def check_scalar(key: str, value: Any) -> Number | torch.Tensor:
    """Check a logged value; return it as a Python int/float or a detached 0-dim tensor."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{key!r}: a logged tensor must have exactly one element, got shape "
                f"{tuple(value.shape)}"
            )
        # detach: a loss must not keep its autograd graph alive in the log
        return value.detach().reshape(())
    if isinstance(value, (np.ndarray, np.number)):
        if value.size != 1:
            raise ValueError(
                f"{key!r}: a logged array must have exactly one element, got shape {value.shape}"
            )
        return value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(
        f"{key!r}: a logged value must be an int, a float, or a one-element tensor or array, "
        f"but got {type(value).__name__}: {value!r}"
    )


def check_count(count: Any) -> Number:
    """A count as a non-negative Python int or float (a one-element array/tensor is unpacked).

    Counts weigh values in :meth:`HistoryBuffer.mean`; a fractional count (a value averaged
    over a weight) is as valid as an integer one.
    """
    if isinstance(count, (torch.Tensor, np.ndarray, np.number)):
        size = count.numel() if isinstance(count, torch.Tensor) else count.size
        if size != 1:
            raise ValueError(f"count must have exactly one element, got shape {tuple(count.shape)}")
        count = count.item()
    if isinstance(count, bool) or not isinstance(count, numbers.Real):
        raise TypeError(
            f"count must be an int or a float, but got {type(count).__name__}: {count!r}"
        )
    if not count >= 0:  # also refuses nan
        raise ValueError(f"count must be a non-negative number, but got {count!r}")
    return int(count) if isinstance(count, numbers.Integral) else float(count)


class HistoryBuffer:
    """Logged values and their counts, oldest first, at most ``max_length`` of them.

    ``mean(window)`` is ``sum(values) / sum(counts)`` over the last ``window`` entries, as in
    MMEngine (a value logged with ``count=n`` is a sum over ``n`` samples). Statistics are
    returned as Python floats. More statistics can be added with
    :meth:`register_statistics` and called by name with :meth:`statistics`.
    """

    _builtin_statistics: ClassVar[tuple[str, ...]] = ("current", "mean", "max", "min")
    # name -> function(buffer, *args, **kwargs), added by register_statistics; shared by
    # every buffer, as in MMEngine
    _statistics_methods: ClassVar[dict[str, Callable[..., Any]]] = {}

    def __init__(
        self,
        log_history: Sequence[Scalar] = (),
        count_history: Sequence[Scalar] = (),
        max_length: int = 1_000_000,
    ) -> None:
        if len(log_history) != len(count_history):
            raise ValueError(
                "log_history and count_history must have the same length, got "
                f"{len(log_history)} and {len(count_history)}"
            )
        if not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, but got {max_length!r}")
        self.max_length = max_length
        self._values: list[Number | torch.Tensor] = []
        self._counts: list[Number] = []
        self._first_pending = 0  # entries before this index are all Python numbers
        self._n_pending = 0
        if len(log_history) > max_length:
            warnings.warn(
                f"The length of history buffer({len(log_history)}) exceeds the "
                f"max_length({max_length}), the first few elements will be ignored.",
                stacklevel=2,
            )
            log_history = log_history[-max_length:]
            count_history = count_history[-max_length:]
        for value, count in zip(log_history, count_history):
            self.update(value, count)

    def update(self, log_val: Scalar, count: Scalar = 1) -> None:
        """Append a value; a tensor is stored as is and converted when first read.

        ``count`` is how many samples ``log_val`` sums over (an int or a float weight).
        """
        count = check_count(count)
        value = check_scalar("log_val", log_val)
        self._values.append(value)
        self._counts.append(count)
        if isinstance(value, torch.Tensor):
            self._n_pending += 1
        # trim in batches: amortised O(1) per update instead of a list shift per update
        excess = len(self._values) - self.max_length
        if excess > 0 and (excess >= 1024 or excess * 4 >= self.max_length):
            self._drop_oldest(excess)
        if self._n_pending >= _MAX_PENDING:
            self._materialize()

    def _drop_oldest(self, n: int) -> None:
        dropped = self._values[:n]
        del self._values[:n]
        del self._counts[:n]
        self._n_pending -= sum(isinstance(v, torch.Tensor) for v in dropped)
        self._first_pending = max(0, self._first_pending - n)

    def _materialize(self) -> None:
        """Convert every pending tensor to a Python number, one transfer per (device, dtype)."""
        if self._n_pending:
            groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
            for i in range(self._first_pending, len(self._values)):
                v = self._values[i]
                if isinstance(v, torch.Tensor):
                    groups.setdefault((v.device, v.dtype), []).append(i)
            for indices in groups.values():
                host = torch.stack([self._values[i] for i in indices]).tolist()
                for i, number in zip(indices, host):
                    self._values[i] = number
            self._n_pending = 0
        self._first_pending = len(self._values)

    def _window(self, window_size: int | None) -> tuple[list[Number], list[Number]]:
        self._materialize()
        excess = len(self._values) - self.max_length
        if excess > 0:
            self._drop_oldest(excess)
        if window_size is None:
            return self._values, self._counts  # type: ignore[return-value]
        if not isinstance(window_size, int) or isinstance(window_size, bool) or window_size < 1:
            raise ValueError(f"window_size must be a positive int, but got {window_size!r}")
        return self._values[-window_size:], self._counts[-window_size:]  # type: ignore[return-value]

    def _require_data(self) -> None:
        if not self._values:
            raise ValueError("HistoryBuffer is empty: call update() first")

    @property
    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """(values, counts) as numpy arrays, oldest first (counts are int64 unless a count
        was fractional)."""
        values, counts = self._window(None)
        count_dtype = np.int64 if all(type(c) is int for c in counts) else np.float64
        return np.asarray(values, dtype=np.float64), np.asarray(counts, dtype=count_dtype)

    # MMEngine's attribute names: custom statistics (see register_statistics) read them
    @property
    def _log_history(self) -> np.ndarray:
        return self.data[0]

    @property
    def _count_history(self) -> np.ndarray:
        return self.data[1]

    def __len__(self) -> int:
        return min(len(self._values), self.max_length)

    def current(self) -> float:
        """The value logged last."""
        self._require_data()
        values, _ = self._window(1)
        return float(values[-1])

    def mean(self, window_size: int | None = None) -> float:
        """sum(values) / sum(counts) over the last ``window_size`` entries (all if None)."""
        self._require_data()
        values, counts = self._window(window_size)
        return float(np.sum(values, dtype=np.float64) / np.sum(counts, dtype=np.float64))

    def max(self, window_size: int | None = None) -> float:
        """Largest of the last ``window_size`` values (all if None)."""
        self._require_data()
        return float(max(self._window(window_size)[0]))

    def min(self, window_size: int | None = None) -> float:
        """Smallest of the last ``window_size`` values (all if None)."""
        self._require_data()
        return float(min(self._window(window_size)[0]))

    @classmethod
    def register_statistics(cls, method: Callable[..., Any]) -> Callable[..., Any]:
        """Register ``method(buffer, *args, **kwargs)`` as a statistic named after it.

        Use it as a decorator; :meth:`statistics` then calls it by name. Inside, read the
        history with ``self.data`` (or MMEngine's ``self._log_history`` /
        ``self._count_history``). Returns ``method`` unchanged.
        """
        name = method.__name__
        if name in cls._builtin_statistics or name in cls._statistics_methods:
            raise ValueError(f"a HistoryBuffer statistic named {name!r} is already registered")
        cls._statistics_methods[name] = method
        return method

    def statistics(self, method_name: str, *args: Any, **kwargs: Any) -> Any:
        """Call a statistic by name, as log processors do: 'current', 'mean', 'max', 'min'
        or one added with :meth:`register_statistics`."""
        if method_name in self._builtin_statistics:
            return getattr(self, method_name)(*args, **kwargs)
        method = self._statistics_methods.get(method_name)
        if method is None:
            known = [*self._builtin_statistics, *self._statistics_methods]
            raise KeyError(
                f"unknown statistic {method_name!r}; use one of {known} or add one with "
                "HistoryBuffer.register_statistics"
            )
        return method(self, *args, **kwargs)

    def state_dict(self) -> dict[str, Any]:
        """Plain Python lists and ints: loadable with ``torch.load(weights_only=True)``."""
        values, counts = self._window(None)
        return {
            "log_history": list(values),
            "count_history": list(counts),
            "max_length": self.max_length,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> HistoryBuffer:
        """Rebuild a buffer from :meth:`state_dict` output."""
        return cls(state["log_history"], state["count_history"], state.get("max_length", 1_000_000))

    def __repr__(self) -> str:
        return f"HistoryBuffer(len={len(self)}, max_length={self.max_length})"
