"""The ``clip_grad`` setting of an optimizer wrapper, checked once and applied with torch.

``clip_grad=dict(type='norm', max_norm=..., norm_type=2, error_if_nonfinite=False)`` or
``dict(type='value', clip_value=...)``; ``type`` defaults to ``'norm'``. The caller's dict is
read, never changed (MMEngine pops ``type`` out of it). Bad settings fail when the wrapper is
built, naming the key, instead of at the first step inside torch.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

_ACCEPTED = {
    "norm": ("max_norm", "norm_type", "error_if_nonfinite", "foreach"),
    "value": ("clip_value", "foreach"),
}
_REQUIRED = {"norm": "max_norm", "value": "clip_value"}


def _real(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"clip_grad[{key!r}] must be a number, but got {value!r}")
    return float(value)


@dataclass(frozen=True)
class GradClip:
    """A checked clipping setting.

    Attributes:
        type: ``'norm'`` (scale all grads so their total ``norm_type``-norm is at most
            ``max_norm``) or ``'value'`` (clamp every element to ``[-clip_value, clip_value]``).
        max_norm, norm_type, error_if_nonfinite: for ``'norm'``; ``norm_type`` is a float,
            ``math.inf`` for the max-norm (the config may say ``'inf'``).
        clip_value: for ``'value'``.
        foreach: passed to torch's clipping functions (None lets torch choose).
    """

    type: str
    max_norm: float | None = None
    norm_type: float = 2.0
    error_if_nonfinite: bool = False
    clip_value: float | None = None
    foreach: bool | None = None

    @classmethod
    def from_config(cls, clip_grad: Mapping[str, Any] | None) -> GradClip | None:
        """Check a ``clip_grad`` config; None means no clipping.

        The messages of the first three checks are MMEngine's (and so is the exception type).
        """
        if clip_grad is None:
            return None
        if not isinstance(clip_grad, Mapping) or not clip_grad:
            raise AssertionError(
                "If `clip_grad` is not None, it should be a `dict` which is the arguments of "
                "`torch.nn.utils.clip_grad_norm_` or clip_grad_value_`."
            )
        cfg = dict(clip_grad)
        clip_type = cfg.pop("type", "norm")
        if clip_type not in _ACCEPTED:
            raise ValueError(f'type of clip_grad should be "norm" or "value" but got {clip_type}')
        if not cfg:
            raise AssertionError(
                "`clip_grad` should contain other arguments besides `type`. The arguments "
                "should match with the `torch.nn.utils.clip_grad_norm_` or clip_grad_value_`"
            )
        unknown = sorted(set(cfg) - set(_ACCEPTED[clip_type]))
        if unknown:
            raise TypeError(
                f"clip_grad with type={clip_type!r} got unexpected key(s) {unknown}; "
                f"accepted keys: {list(_ACCEPTED[clip_type])}"
            )
        required = _REQUIRED[clip_type]
        if required not in cfg:
            raise TypeError(
                f"clip_grad with type={clip_type!r} needs {required!r}, got {clip_grad!r}"
            )
        foreach = cfg.get("foreach")
        if foreach is not None and not isinstance(foreach, bool):
            raise TypeError(f"clip_grad['foreach'] must be None or a bool, but got {foreach!r}")
        if clip_type == "value":
            return cls(
                type="value", clip_value=_real("clip_value", cfg["clip_value"]), foreach=foreach
            )

        norm_type = cfg.get("norm_type", 2.0)
        try:
            norm_type_f = float(norm_type)
        except (TypeError, ValueError):
            norm_type_f = math.nan
        if isinstance(norm_type, bool) or math.isnan(norm_type_f):
            raise ValueError(
                f"clip_grad['norm_type'] must be a number or 'inf', but got {norm_type!r}"
            )
        error_if_nonfinite = cfg.get("error_if_nonfinite", False)
        if not isinstance(error_if_nonfinite, bool):
            raise TypeError(
                f"clip_grad['error_if_nonfinite'] must be a bool, but got {error_if_nonfinite!r}"
            )
        return cls(
            type="norm",
            max_norm=_real("max_norm", cfg["max_norm"]),
            norm_type=norm_type_f,
            error_if_nonfinite=error_if_nonfinite,
            foreach=foreach,
        )

    @property
    def log_name(self) -> str:
        """Name under which the wrapper logs the pre-clip statistic (MMEngine's names)."""
        return "grad_norm" if self.type == "norm" else "grad_value"

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the torch clipping function (MMEngine's ``clip_grad_kwargs``)."""
        if self.type == "value":
            return {"clip_value": self.clip_value, "foreach": self.foreach}
        return {
            "max_norm": self.max_norm,
            "norm_type": self.norm_type,
            "error_if_nonfinite": self.error_if_nonfinite,
            "foreach": self.foreach,
        }

    def apply(self, params: Iterable[torch.Tensor]) -> torch.Tensor | None:
        """Clip the grads of ``params`` in place with torch's functions (the fallback path).

        Returns the total norm before clipping (a 0-dim tensor, not synced to the host) for
        ``'norm'``, None for ``'value'``.
        """
        if self.type == "value":
            torch.nn.utils.clip_grad_value_(params, **self.kwargs())
            return None
        return torch.nn.utils.clip_grad_norm_(params, **self.kwargs())
