"""The fused step as a registered custom operator, for ``torch.compile``.

Under ``torch.compile`` a :class:`~fastopt.optim.base.FusedOptimizer` step is one call of
``torch.ops.fastopt.step``: dynamo never traces the Python step logic (plan refresh, raw
pointers), and the graph reads none of the group hyperparameters, so an lr scheduler changing
``group['lr']`` every step recompiles nothing; the engine reads the groups when the op runs, as in
eager. The op's real implementation is the optimizer's eager step, found by an int handle in a
registry of live optimizers (weak references); its fake implementation does nothing.

What the graph sees: the params (mutated), their grads (read) and the fused pipeline's tensors
(``loss_scale`` read, ``found_inf`` / ``norm_out`` written). Optimizer states are the op's own:
they are not graph inputs, so they are created on the first compiled step like in eager.

A backend that functionalizes without re-inplacing (``aot_eager``) hands the op clones of the
params and copies them back afterwards; the real implementation then copies each clone into its
param, steps, and copies the result back into the clone (inductor passes the params themselves).
"""

from __future__ import annotations

import itertools
import math
import weakref
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from fastopt.optim.base import FusedOptimizer

__all__ = ["compiled_step", "register"]

_live: weakref.WeakValueDictionary[int, FusedOptimizer] = weakref.WeakValueDictionary()
_handles = itertools.count(1)


def register(opt: FusedOptimizer) -> None:
    """Give ``opt`` its own handle (a copy or an unpickled optimizer gets a new one)."""
    handle = next(_handles)
    _live[handle] = opt
    opt.__dict__["_op_handle"] = handle
    sync_params(opt)


def sync_params(opt: FusedOptimizer) -> None:
    """The tuple of params the compiled step hands the op, kept out of ``param_groups``: dynamo
    guards every value of the groups it reads (an lr change would recompile), and reading
    ``param_groups`` makes it switch ``capturable`` on for CUDA groups."""
    opt.__dict__["_op_params"] = tuple(p for g in opt.param_groups for p in g["params"])


def _optimizer(handle: int) -> FusedOptimizer:
    opt = _live.get(handle)
    if opt is None:
        raise RuntimeError(
            f"fastopt::step: the optimizer of handle {handle} no longer exists (a compiled "
            "function outlived the optimizer it was traced with)"
        )
    return opt


def _pairs(opt: FusedOptimizer, params: list[torch.Tensor]) -> list[tuple[torch.Tensor, bool]]:
    """Each optimizer param with whether the op got a copy of it instead; refuses a param list
    that is no longer the optimizer's (its groups were edited in place after tracing)."""
    own = [p for g in opt.param_groups for p in g["params"]]
    ptrs = {p.data_ptr() for p in own if p.numel()}
    stale = len(own) != len(params)
    pairs = []
    for mine, given in zip(own, params):
        if given.shape != mine.shape or given.dtype != mine.dtype or given.device != mine.device:
            stale = True
        # the param itself, or another tensor object over exactly its memory
        same = given is mine or (
            given.data_ptr() == mine.data_ptr() and given.stride() == mine.stride()
        )
        if not same and given.numel() and given.data_ptr() in ptrs:
            stale = True  # another param's memory: the list is not the optimizer's
        pairs.append((mine, not same))
    if stale:
        sync_params(opt)
        raise RuntimeError(
            f"{type(opt).__name__}: the params of a compiled step are not the optimizer's "
            "params any more (param_groups edited in place after compiling?); change them "
            "with add_param_group() or load_state_dict(), or call torch._dynamo.reset()"
        )
    return pairs


# cudagraph_unsafe: inductor never puts the op in a CUDA graph (mode="reduce-overhead" runs it
# outside the graph): a replay would reuse the pointers and hyperparameters of the capture,
# skipping the plan's per-step validation and the groups' current lr
@torch.library.custom_op(
    "fastopt::step",
    mutates_args=("params", "found_inf", "norm_out"),
    tags=(torch.Tag.cudagraph_unsafe,),
)
def _step(
    handle: int,
    params: list[torch.Tensor],
    grads: list[torch.Tensor | None],
    fused: bool,
    max_norm: float | None,
    norm_type: float,
    loss_scale: torch.Tensor | None,
    found_inf: torch.Tensor | None,
    norm_out: torch.Tensor | None,
) -> None:
    """One eager step of the optimizer ``handle`` (``fused``: through ``fused_step`` with the
    pipeline arguments), on ``params`` with ``grads``."""
    opt = _optimizer(handle)
    pairs = _pairs(opt, params)
    with torch.no_grad():
        saved = []
        for (mine, copied), given, grad in zip(pairs, params, grads):
            if copied:
                mine.copy_(given)
            if grad is not mine.grad:  # grads made inside the graph are not assigned yet
                saved.append((mine, mine.grad))
                mine.grad = grad
        try:
            if fused:
                opt._fused_step_eager(
                    max_norm=max_norm,
                    norm_type=norm_type,
                    loss_scale=loss_scale,
                    found_inf=found_inf,
                    norm_out=norm_out,
                )
            else:
                opt._step_eager({})
        finally:
            for mine, grad in saved:
                mine.grad = grad
        for (mine, copied), given in zip(pairs, params):
            if copied:
                given.copy_(mine)


@_step.register_fake
def _(
    handle: int,
    params: list[torch.Tensor],
    grads: list[torch.Tensor | None],
    fused: bool,
    max_norm: float | None,
    norm_type: float,
    loss_scale: torch.Tensor | None,
    found_inf: torch.Tensor | None,
    norm_out: torch.Tensor | None,
) -> None:
    return None


def compiled_step(opt: FusedOptimizer, pipeline: dict[str, Any] | None) -> None:
    """What a step is while dynamo traces: one op call (``pipeline``: fused_step's keywords,
    None for a plain step)."""
    if pipeline and pipeline.get("process_group") is not None:
        raise NotImplementedError(
            "a fused step over a process group (ZeroRedundancyOptimizer) inside torch.compile: "
            "call it outside the compiled function"
        )
    pipeline = pipeline or {}
    params = list(opt._op_params)
    max_norm = pipeline.get("max_norm")
    norm_type = pipeline.get("norm_type", 2.0)
    with torch.no_grad():
        torch.ops.fastopt.step(
            opt._op_handle,
            params,
            [p.grad for p in params],
            bool(pipeline),
            None if max_norm is None else float(max_norm),
            math.inf if norm_type in ("inf", math.inf) else float(norm_type),
            pipeline.get("loss_scale"),
            pipeline.get("found_inf"),
            pipeline.get("norm_out"),
        )
