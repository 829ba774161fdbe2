"""``OptimWrapper``: one training-step interface over an optimizer (MMEngine semantics).

``update_params(loss)`` divides the loss for gradient accumulation, runs backward, and every
``accumulative_counts`` iterations clips the gradients, steps and zeroes them. Behaviour,
defaults and messages follow MMEngine's ``OptimWrapper`` so that model code and configs
written for it work unchanged; see the project's mmengine-semantics reference, section 3.1.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastopt.logging import MessageHub
from fastopt.registry import OPTIM_WRAPPERS
from fastopt.wrapper.grad_clip import GradClip

logger = logging.getLogger(__name__)


def _fused_target(optimizer: torch.optim.Optimizer) -> Any:
    """The fastopt optimizer that runs the step: the optimizer itself, or the local optimizer
    of a ``ZeroRedundancyOptimizer`` (each process holds a shard: norms are all-reduced)."""
    from fastopt.optim.base import FusedOptimizer

    if isinstance(optimizer, FusedOptimizer):
        return optimizer
    local = getattr(optimizer, "optim", None)
    if isinstance(local, FusedOptimizer) and hasattr(optimizer, "process_group"):
        return local
    return None


@OPTIM_WRAPPERS.register_module()
class OptimWrapper:
    """Gradient accumulation and clipping around a ``torch.optim.Optimizer``.

    Args:
        optimizer: the optimizer that updates the parameters.
        accumulative_counts: update the parameters once every this many ``update_params``
            calls; the loss is divided by it so the accumulated gradient is a mean.
        clip_grad: None, or ``dict(type='norm', max_norm=..., norm_type=2,
            error_if_nonfinite=False)`` / ``dict(type='value', clip_value=...)``. With
            ``type='norm'`` the total norm before clipping is logged as ``train/grad_norm``.
            The dict is not modified.

    Call :meth:`initialize_count_status` with the start and total iteration counts (the
    runner does) so that the last, shorter accumulation window still steps and its losses
    are divided by its real length.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        accumulative_counts: int = 1,
        clip_grad: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(accumulative_counts, bool) or not isinstance(accumulative_counts, int):
            raise TypeError(f"accumulative_counts must be an int, but got {accumulative_counts!r}")
        if accumulative_counts <= 0:
            raise AssertionError("_accumulative_counts at least greater than or equal to 1")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(
                "optimizer must be a `torch.optim.Optimizer` instance, but got "
                f"{type(optimizer).__name__}"
            )
        self._accumulative_counts = accumulative_counts
        self.optimizer = optimizer
        self.grad_clip = GradClip.from_config(clip_grad)
        # Captured once, as MMEngine does: the runner creates its hub before the wrapper.
        self.message_hub = MessageHub.get_current_instance()
        self._inner_count = 0
        self._max_counts = -1  # total iterations, known after initialize_count_status
        self._remainder_counts = -1  # length of the last, incomplete window
        # With several param groups, a pseudo group carries the optimizer defaults so that
        # schedulers also schedule the "base" lr (logged as base_lr), as in MMEngine.
        self.base_param_settings: dict[str, Any] | None = None
        if len(optimizer.param_groups) > 1:
            self.base_param_settings = {
                "params": torch.tensor([0.0], dtype=torch.float),
                **optimizer.defaults,
            }

    # --------------------------------------------------------------------- training step
    def update_params(
        self,
        loss: torch.Tensor,
        step_kwargs: dict[str, Any] | None = None,
        zero_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Backward the (accumulation-scaled) loss; step and zero the grads when due."""
        loss = self.scale_loss(loss)
        self.backward(loss)
        if self.should_update():
            self.step(**(step_kwargs or {}))
            self.zero_grad(**(zero_kwargs or {}))

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        """``loss.backward(**kwargs)`` and count the iteration.

        A subclass that overrides this must also increment ``_inner_count``.
        """
        loss.backward(**kwargs)
        self._inner_count += 1

    def step(self, **kwargs: Any) -> None:
        """Clip the gradients if configured, then ``optimizer.step(**kwargs)``.

        With a fastopt fused optimizer (and norm clipping or none) this is one engine call:
        a reduction pass for the norm and one update pass reading ``grad * clip_coef``, with
        the grads left untouched; any other optimizer gets torch's sequence.
        """
        if self._use_fused_pipeline(kwargs):
            self._fused_clip_and_step()
        else:
            self._clip_and_step(**kwargs)

    def _use_fused_pipeline(self, step_kwargs: Mapping[str, Any]) -> bool:
        return (
            not step_kwargs
            and _fused_target(self.optimizer) is not None
            and (self.grad_clip is None or self.grad_clip.type == "norm")
        )

    def _fused_clip_and_step(
        self, loss_scale: torch.Tensor | None = None, found_inf: torch.Tensor | None = None
    ) -> None:
        """The fused pipeline: unscale (AMP), clip by norm, skip on inf/nan (AMP), step."""
        clip = self.grad_clip
        norm = None
        if clip is not None:
            # any param: with one group per param, a ZeRO shard's first groups may be empty
            device = next(p for g in self.optimizer.param_groups for p in g["params"]).device
            norm = torch.empty((), dtype=torch.float32, device=device)  # the hub keeps it
            if clip.error_if_nonfinite and found_inf is None:
                found_inf = torch.zeros((), dtype=torch.float32, device=device)
        pipeline: dict[str, Any] = dict(
            max_norm=clip.max_norm if clip is not None else None,
            norm_type=clip.norm_type if clip is not None else 2.0,
            loss_scale=loss_scale,
            found_inf=found_inf,
            norm_out=norm,
        )
        if _fused_target(self.optimizer) is self.optimizer:
            self.optimizer.fused_step(**pipeline)
        else:  # ZeRO: its step runs the local fused step, then syncs the updated shards
            self.optimizer.step(**pipeline, process_group=self.optimizer.process_group)
        if clip is None:
            return
        if clip.error_if_nonfinite and not torch.isfinite(norm):  # the step was skipped
            raise RuntimeError(
                f"The total norm of order {clip.norm_type} for gradients from `parameters` is "
                "non-finite, so it cannot be clipped. To disable this error and scale the "
                "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
            )
        self.message_hub.update_scalar(f"train/{clip.log_name}", norm)

    def _clip_and_step(self, **kwargs: Any) -> None:
        """The torch sequence of one update: clip (logging the norm), then step."""
        if self.grad_clip is not None:
            self._clip_grad()
        self.optimizer.step(**kwargs)

    def zero_grad(self, **kwargs: Any) -> None:
        """``optimizer.zero_grad(**kwargs)``."""
        self.optimizer.zero_grad(**kwargs)

    def _clip_grad(self) -> None:
        """Clip the grads of every real group's trainable params with a grad.

        The pre-clip norm goes to the message hub as a tensor; it is converted to a float only
        when a logger reads it, so clipping does not force a host sync every step.
        """
        assert self.grad_clip is not None
        params = [
            p
            for group in self.optimizer.param_groups
            for p in group["params"]
            if p.requires_grad and p.grad is not None
        ]
        if not params:
            return
        grad_norm = self.grad_clip.apply(params)
        if grad_norm is not None:
            self.message_hub.update_scalar(f"train/{self.grad_clip.log_name}", grad_norm)

    @property
    def clip_grad_kwargs(self) -> dict[str, Any] | None:
        """Arguments of the torch clipping function (MMEngine's attribute); None if off."""
        return None if self.grad_clip is None else self.grad_clip.kwargs()

    # ---------------------------------------------------------------------- accumulation
    def initialize_count_status(self, model: nn.Module, init_counts: int, max_counts: int) -> None:
        """Set the iteration counter (``init_counts``) and the total (``max_counts``).

        Needed for the last window when ``max_counts`` is not a multiple of
        ``accumulative_counts``: without it that window never steps and its losses are
        divided by ``accumulative_counts`` instead of its length.
        """
        self._inner_count = init_counts
        self._max_counts = max_counts
        if self._inner_count % self._accumulative_counts != 0:
            logger.warning(
                "Resumed iteration number is not divisible by `_accumulative_counts` in "
                "`GradientCumulativeOptimizerHook`, which means the gradient of some "
                "iterations is lost and the result may be influenced slightly."
            )
        if self._accumulative_counts > 1 and any(
            isinstance(m, _BatchNorm) for m in model.modules()
        ):
            logger.warning(
                "Gradient accumulative may slightly decrease performance because the model "
                "has BatchNorm layers."
            )
        self._remainder_counts = self._max_counts % self._accumulative_counts

    def should_update(self) -> bool:
        """Whether this iteration ends a window (checked after backward counted it)."""
        return (
            self._inner_count % self._accumulative_counts == 0
            or self._inner_count == self._max_counts
        )

    def should_sync(self) -> bool:
        """Whether the coming backward ends a window, so DDP must all-reduce its grads."""
        coming = self._inner_count + 1
        return coming % self._accumulative_counts == 0 or coming == self._max_counts

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """Run the forward in this context: it skips DDP's grad all-reduce while accumulating."""
        if not self.should_sync() and hasattr(model, "no_sync"):
            with model.no_sync():
                yield
        else:
            yield

    def scale_loss(self, loss: torch.Tensor) -> torch.Tensor:
        """Divide the loss by the length of the current accumulation window."""
        if self._accumulative_counts == 1:
            factor = 1
        elif self._max_counts == -1:
            factor = self._accumulative_counts
        elif self._inner_count < self._max_counts - self._remainder_counts:
            factor = self._accumulative_counts
        else:
            factor = self._remainder_counts
            if factor <= 0:
                raise AssertionError(
                    "loss_factor should be larger than zero! This error could happened when "
                    "initialize_iter_status called with an error `init_counts` or `max_counts`"
                )
        return loss / factor

    @property
    def inner_count(self) -> int:
        """Number of backward passes counted so far."""
        return self._inner_count

    # ------------------------------------------------------------------ optimizer facade
    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The optimizer's groups, plus the base-settings pseudo group if there is one.

        Schedulers iterate this, so they also update the pseudo group.
        """
        if self.base_param_settings is None:
            return self.optimizer.param_groups
        return [*self.optimizer.param_groups, self.base_param_settings]

    @property
    def defaults(self) -> dict[str, Any]:
        """The optimizer's defaults (schedulers read them)."""
        return self.optimizer.defaults

    def get_lr(self) -> dict[str, list[float]]:
        """``{'lr': [per real group]}``, plus ``'base_lr'`` when there is a pseudo group."""
        result: dict[str, list[float]] = {}
        if self.base_param_settings is not None:
            result["base_lr"] = [self.base_param_settings["lr"]]
        result["lr"] = [group["lr"] for group in self.optimizer.param_groups]
        return result

    def get_momentum(self) -> dict[str, list[float]]:
        """``{'momentum': [...]}``: each real group's momentum, or betas[0], or 0."""
        momentum = []
        for group in self.optimizer.param_groups:
            if "momentum" in group:
                momentum.append(group["momentum"])
            elif "betas" in group:
                momentum.append(group["betas"][0])
            else:
                momentum.append(0)
        return {"momentum": momentum}

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state dict, plus ``base_param_settings`` when there is one."""
        state_dict = self.optimizer.state_dict()
        if self.base_param_settings is not None:
            state_dict["base_param_settings"] = dict(self.base_param_settings)
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load :meth:`state_dict` output (the given dict is not modified)."""
        state_dict = dict(state_dict)
        base_param_settings = state_dict.pop("base_param_settings", None)
        if base_param_settings is not None:
            self.base_param_settings = dict(base_param_settings)
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return (
            f"Type: {type(self).__name__}\n"
            f"_accumulative_counts: {self._accumulative_counts}\n"
            f"optimizer: \n{self.optimizer!r}\n"
        )
