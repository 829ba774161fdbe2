"""``AmpOptimWrapper``: ``OptimWrapper`` plus autocast and loss scaling (MMEngine semantics).

Differences from MMEngine's, on purpose:

* it runs wherever the parameters live, CPU included (``torch.amp.GradScaler(device)`` and
  ``torch.autocast(device)``); MMEngine asserts that a GPU/NPU/MLU is present;
* with bfloat16 autocast no loss scaling is done at all (the scaler is a disabled
  ``GradScaler``: scale and unscale are identities, ``step`` is a plain step). bfloat16 has the
  range of float32, and torch has no bfloat16 unscale kernel (open-mmlab/mmengine#1540);
* an int ``loss_scale`` is a static scale like a float (MMEngine rejects ``512``);
* bad arguments fail at construction with the argument and the value in the message.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Union

import torch
from torch import nn

from fastopt.registry import OPTIM_WRAPPERS
from fastopt.wrapper.optim_wrapper import OptimWrapper

LossScale = Union[str, float, int, Mapping[str, Any]]

_AUTOCAST_DTYPES = (torch.float16, torch.bfloat16)


def _parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    valid = AmpOptimWrapper.valid_dtypes
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in valid:
        return getattr(torch, dtype)
    if isinstance(dtype, torch.dtype) and str(dtype).removeprefix("torch.") in valid:
        return dtype
    raise ValueError(f"dtype should be None or any of {valid}, but got {dtype!r}")


# The private torch API the fused AMP step uses, all of it. GradScaler keeps its scale and
# growth tracker as device tensors and updates them with torch._amp_update_scale_; its public
# getters (get_scale, ...) copy them to the host, a synchronisation per step, and its public
# update() reads the inf flags of its own unscale_, which the fused step replaces. The names
# are checked on every use, so a torch that renames them fails with this message instead of
# training with a scale that never changes (tests/test_amp_optim_wrapper.py pins them).
PRIVATE_SCALER_ATTRIBUTES = ("_scale", "_growth_tracker")
PRIVATE_TORCH_FUNCTIONS = ("_amp_update_scale_",)


def scaler_state_tensors(
    scaler: torch.amp.GradScaler,
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``scaler``'s scale and growth tracker tensors (None before its first ``scale()``).

    Raises RuntimeError naming what is missing when this torch has renamed them.
    """
    missing = [f"GradScaler.{a}" for a in PRIVATE_SCALER_ATTRIBUTES if not hasattr(scaler, a)]
    missing += [f"torch.{f}" for f in PRIVATE_TORCH_FUNCTIONS if not hasattr(torch, f)]
    if missing:
        raise RuntimeError(
            f"torch {torch.__version__} has no {', '.join(missing)}: the fused AMP step of "
            "fastopt's AmpOptimWrapper relies on them (see PRIVATE_SCALER_ATTRIBUTES in "
            "fastopt/wrapper/amp_optim_wrapper.py); fastopt needs an update for this torch"
        )
    return scaler._scale, scaler._growth_tracker


def _device_type(optimizer: torch.optim.Optimizer) -> str:
    """Device type of the optimizer's first parameter (autocast and the scaler run there)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            return param.device.type
    return "cuda" if torch.cuda.is_available() else "cpu"


@OPTIM_WRAPPERS.register_module()
class AmpOptimWrapper(OptimWrapper):
    """Mixed-precision training: the forward under autocast, the loss scaled for backward.

    Args:
        loss_scale: ``'dynamic'`` (torch ``GradScaler`` defaults: start at 2**16, halve on
            inf/nan, double after 2000 clean steps); a positive number for a static scale
            (steps with inf/nan grads are still skipped, and the scale is reset to this value
            after every step); or a dict of ``GradScaler`` arguments.
        dtype: autocast dtype: ``'float16'``, ``'bfloat16'``, ``'float32'``, ``'float64'``
            (the last two run without autocast), a ``torch.dtype`` among these, or None for
            autocast's default on the device (float16 on CUDA, bfloat16 on CPU).
        use_fsdp: use FSDP's ``ShardedGradScaler`` (sharded gradients).
        **kwargs: ``optimizer``, ``accumulative_counts``, ``clip_grad`` of :class:`OptimWrapper`.

    The device (for autocast and the scaler) is that of the optimizer's parameters when the
    wrapper is built, so move the model first. With ``clip_grad`` the grads are unscaled before
    clipping, so the logged ``grad_norm`` is the true norm (inf or nan on an overflow step,
    which is then skipped).
    """

    valid_dtypes = ("float16", "bfloat16", "float32", "float64")

    def __init__(
        self,
        loss_scale: LossScale = "dynamic",
        dtype: str | torch.dtype | None = None,
        use_fsdp: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.use_fsdp = use_fsdp
        self.cast_dtype = _parse_dtype(dtype)
        self.device_type = _device_type(self.optimizer)
        self.autocast_dtype = self.cast_dtype or torch.get_autocast_dtype(self.device_type)
        self._scale_update_param: float | None = None
        scaler_kwargs = self._scaler_kwargs(loss_scale)
        if self.autocast_dtype == torch.bfloat16:
            scaler_kwargs["enabled"] = False
            self._scale_update_param = None
        scaler_kwargs.setdefault("device", self.device_type)
        if use_fsdp:
            from torch.distributed.fsdp.sharded_grad_scaler import ShardedGradScaler

            scaler_cls: type = ShardedGradScaler
        else:
            scaler_cls = torch.amp.GradScaler
        try:
            self.loss_scaler = scaler_cls(**scaler_kwargs)
        except TypeError as err:
            raise TypeError(
                f"loss_scale={loss_scale!r} is not a valid set of {scaler_cls.__name__} "
                f"arguments: {err}"
            ) from err

    def _scaler_kwargs(self, loss_scale: LossScale) -> dict[str, Any]:
        """Check ``loss_scale``; return the scaler's arguments and set the static scale."""
        if isinstance(loss_scale, str):
            if loss_scale == "dynamic":
                return {}
            raise ValueError(
                f'loss_scale must be "dynamic", a positive number or a dict of GradScaler '
                f"arguments, but got {loss_scale!r}"
            )
        if isinstance(loss_scale, Mapping):
            return dict(loss_scale)
        if isinstance(loss_scale, numbers.Real) and not isinstance(loss_scale, bool):
            scale = float(loss_scale)
            if not (math.isfinite(scale) and scale > 0):
                raise ValueError(
                    f"loss_scale must be a positive finite number, but got {loss_scale!r}"
                )
            self._scale_update_param = scale
            return {"init_scale": scale}
        raise TypeError(
            'loss_scale must be "dynamic", a positive number or a dict of GradScaler '
            f"arguments, but got {type(loss_scale).__name__}: {loss_scale!r}"
        )

    @property
    def uses_loss_scaling(self) -> bool:
        """False for bfloat16 (and a dict with ``enabled=False``): no scaling is done."""
        return self.loss_scaler.is_enabled()

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """Backward the scaled loss and count the iteration."""
        self.loss_scaler.scale(loss).backward(**kwargs)
        self._inner_count += 1

    def _use_fused_pipeline(self, step_kwargs: Mapping[str, Any]) -> bool:
        # FSDP's sharded scaler reduces its inf checks across ranks: keep torch's sequence
        return not self.use_fsdp and super()._use_fused_pipeline(step_kwargs)

    def _fused_clip_and_step(
        self, loss_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None
    ) -> None:
        """Unscale + clip + inf/nan skip + step in the engine, then GradScaler's scale update."""
        scaler = self.loss_scaler
        if not self.uses_loss_scaling:  # bf16: no scale
            return super()._fused_clip_and_step()
        scale, growth_tracker = scaler_state_tensors(scaler)
        if scale is None:  # scale() was not called: torch's own sequence raises its error
            return self._clip_and_step()
        found_inf = torch.zeros((), dtype=torch.float32, device=scale.device)
        super()._fused_clip_and_step(loss_scale=scale, found_inf=found_inf)
        if self._scale_update_param is not None:  # static scale: reset to it
            scaler.update(self._scale_update_param)
        else:  # GradScaler.update's own in-place kernel, fed our inf flag: no host sync
            torch._amp_update_scale_(
                scale,
                growth_tracker,
                found_inf,
                scaler.get_growth_factor(),
                scaler.get_backoff_factor(),
                scaler.get_growth_interval(),
            )

    def _clip_and_step(self, **kwargs: Any) -> None:
        """Torch's AMP sequence: unscale and clip (if clipping), scaler step, scale update."""
        if self.grad_clip is not None:
            self.loss_scaler.unscale_(self.optimizer)
            self._clip_grad()
        self.loss_scaler.step(self.optimizer, **kwargs)
        self.loss_scaler.update(self._scale_update_param)

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """The accumulation context of :class:`OptimWrapper` plus autocast on the device."""
        enabled = self.autocast_dtype in _AUTOCAST_DTYPES
        dtype = self.autocast_dtype if enabled else None
        with super().optim_context(model):
            with torch.autocast(self.device_type, dtype=dtype, enabled=enabled):
                yield

    def state_dict(self) -> dict[str, Any]:
        """:meth:`OptimWrapper.state_dict` plus ``loss_scaler`` (absent when not scaling)."""
        state_dict = super().state_dict()
        if self.uses_loss_scaling:
            state_dict["loss_scaler"] = self.loss_scaler.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output; a ``loss_scaler`` entry is ignored when not scaling.

        So a float16 checkpoint resumes under bfloat16 and the other way round (the scaler
        then starts afresh). The given dict is not modified.
        """
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop("loss_scaler", None)
        if scaler_state and self.uses_loss_scaling:
            self.loss_scaler.load_state_dict(scaler_state)
        super().load_state_dict(state_dict)
