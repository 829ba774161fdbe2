"""Packs an optimizer's params, grads and states into the engine's launch table.

This is the slow path, run when the table is first needed and whenever something structural
changes (see ``csrc/plan.h``): it validates every param, creates missing states the way torch
does, and hands the engine raw pointers. The per-step refresh (grad pointers, hyperparameters)
happens in C++ without Python bytecode.

The params' device picks the engine (``_C.engine_for``): the CPU engine, or the CUDA engine for
cuda tensors (and, in ``fastopt._C_simt``, for cpu tensors under the host emulation). A device
engine keeps step counts and a workspace on the params' device, so a step never synchronises.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from fastopt._ext import require_C

if TYPE_CHECKING:
    from fastopt.optim.base import FusedOptimizer

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}

LAYOUT_CONTIGUOUS, LAYOUT_DENSE, LAYOUT_STAGED = 0, 1, 2


@dataclass(frozen=True)
class StateSpec:
    """The state tensors an optimizer keeps per param, in the engine's order."""

    names: tuple[str, ...]
    # a buffer torch creates from the first grad (SGD's momentum_buffer): new ones start "fresh"
    fresh: str | None = None


@dataclass
class _Staged:
    """A param that is not dense: stepped through contiguous copies."""

    entry: int
    param: torch.Tensor
    param_buf: torch.Tensor
    grad_buf: torch.Tensor


@dataclass
class Plan:
    """The engine's table for one optimizer, plus what the Python side must keep alive."""

    engine: Any  # fastopt._C.Plan
    param_groups: list[dict[str, Any]]
    state: Any
    steps: torch.Tensor | None
    entry_params: list[torch.Tensor]
    staged: list[_Staged] = field(default_factory=list)
    temporaries: list[torch.Tensor] = field(default_factory=list)
    device: torch.device | None = None
    workspace: torch.Tensor | None = None  # device engines: scratch memory, one per plan

    def stream(self) -> int:
        """The cudaStream_t to launch on: torch's current stream of the params' device."""
        return _current_stream(self.device)

    def is_current(self, optimizer: FusedOptimizer) -> bool:
        return self.param_groups is optimizer.param_groups and self.state is optimizer.state

    def supply_grads(self, fixups: list[int]) -> bool:
        """Give the engine the grads it could not take as they are (staged or other layout).

        Returns False when a grad cannot be used at all (sparse): a rebuild then reports it.
        """
        staged = {s.entry: s for s in self.staged}
        if any(
            (g := self.entry_params[e].grad) is not None and g.layout != torch.strided
            for e in fixups
        ):
            return False
        for entry in fixups:
            param = self.entry_params[entry]
            grad = param.grad
            if grad is None:
                self.engine.set_grad(entry, 0, False)
                continue
            s = staged.get(entry)
            if s is not None:
                s.param_buf.copy_(param)
                s.grad_buf.copy_(grad)
                self.engine.set_grad(entry, s.grad_buf.data_ptr())
            else:  # same values in the param's own layout (the engine walks memory in order)
                fixed = torch.empty_like(param, dtype=grad.dtype).copy_(grad)
                self.temporaries.append(fixed)
                self.engine.set_grad(entry, fixed.data_ptr())
        return True

    def finish(self) -> None:
        for s in self.staged:
            if s.param.grad is not None:
                s.param.copy_(s.param_buf)
        self.temporaries.clear()


def _current_stream(device: torch.device | None) -> int:
    if device is not None and device.type == "cuda":
        return torch.cuda.current_stream(device).cuda_stream
    return 0


def is_non_overlapping_and_dense(t: torch.Tensor) -> bool:
    """Every element has its own slot and the slots fill one block: a permuted contiguous."""
    expected = 1
    dims = sorted((st, s) for s, st in zip(t.shape, t.stride()) if s != 1)
    for stride, size in dims:
        if stride != expected:
            return False
        expected *= size
    return True


def _layout(p: torch.Tensor) -> int:
    if p.is_contiguous():
        return LAYOUT_CONTIGUOUS
    if is_non_overlapping_and_dense(p):
        return LAYOUT_DENSE
    return LAYOUT_STAGED


def _where(opt: FusedOptimizer, gi: int, pi: int, p: torch.Tensor) -> str:
    return (
        f"{type(opt).__name__}: param group {gi}, param {pi} "
        f"(shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"
    )


def _as_state(value: torch.Tensor, like: torch.Tensor, dtype: torch.dtype, layout: int):
    """A state tensor with the given dtype laid out like the engine walks ``like``."""
    if value.shape != like.shape:
        raise ValueError(f"state of shape {tuple(value.shape)} for a param of {tuple(like.shape)}")
    ok = value.dtype == dtype and value.device == like.device
    if layout == LAYOUT_DENSE:
        ok = ok and value.stride() == like.stride()
    else:
        ok = ok and value.is_contiguous()
    if ok:
        return value
    out = (
        torch.empty_like(like, dtype=dtype)
        if layout == LAYOUT_DENSE
        else torch.empty(like.shape, dtype=dtype, device=like.device)
    )
    return out.copy_(value)


def build_plan(opt: FusedOptimizer) -> Plan:
    """Validate every param of every group and pack the table (creating missing states)."""
    C = require_C()
    spec = opt._state_spec_all()
    params: list[torch.Tensor] = []
    entry_of: list[int] = []
    layouts: list[int] = []
    strides: list[Any] = []
    entries: list[tuple] = []
    entry_params: list[torch.Tensor] = []
    staged: list[_Staged] = []
    step_values: list[float] = []
    step_owners: list[dict] = []
    device: torch.device | None = None

    for gi, group in enumerate(opt.param_groups):
        names = opt._state_spec(group).names
        for pi, p in enumerate(group["params"]):
            params.append(p)
            where = _where(opt, gi, pi, p)
            if p.dtype not in DTYPE_CODES:
                raise TypeError(
                    f"{where}: fused optimizers update float32, float16 and bfloat16 params"
                )
            if device is None:
                device = p.device
            elif p.device != device:
                raise RuntimeError(
                    f"{where}: all params must be on one device, found {device} and {p.device}"
                )
            if C.engine_for(p.device.type) is None:
                raise RuntimeError(
                    f"{where}: this build of fastopt has no engine for {p.device.type} tensors "
                    f"(built: {', '.join(C.build_info()['backends']) or 'none'}; `fastopt info` "
                    "shows what was built)"
                )
            if group.get("capturable") and C.engine_for(p.device.type) == "cpu":
                raise RuntimeError(
                    f"{where}: capturable=True needs params on a CUDA device (a step captured "
                    "in a CUDA graph)"
                )
            grad = p.grad
            if grad is not None:
                if grad.is_sparse or grad.layout != torch.strided:
                    raise RuntimeError(
                        f"{where}: sparse gradients are not supported by fused optimizers"
                    )
                if grad.dtype not in (p.dtype, torch.float32):
                    raise TypeError(
                        f"{where}: grad dtype {grad.dtype} must be {p.dtype} or float32"
                    )
            state = opt.state.get(p) or {}
            has_states = all(isinstance(state.get(n), torch.Tensor) for n in names)
            layout = _layout(p)
            layouts.append(layout)
            strides.append(tuple(p.stride()) if layout == LAYOUT_DENSE else None)
            if grad is None and not has_states:
                entry_of.append(-1)  # nothing to do until it has a grad (then: rebuild)
                continue

            state = opt.state[p]
            state_dtype = opt._state_dtype_for(p)
            fresh = 0
            ptrs = [0, 0, 0]
            for k, name in enumerate(names):
                value = state.get(name)
                if isinstance(value, torch.Tensor):
                    value = _as_state(value, p, state_dtype, layout)
                else:
                    value = (
                        torch.zeros_like(p, dtype=state_dtype)
                        if layout == LAYOUT_DENSE
                        else torch.zeros(p.shape, dtype=state_dtype, device=p.device)
                    )
                    fresh |= int(name == spec.fresh)
                state[name] = value
                ptrs[k] = value.data_ptr()

            param_ptr = p.data_ptr()
            if layout == LAYOUT_STAGED:
                buf = p.detach().contiguous()
                gbuf = torch.empty(
                    p.shape, dtype=grad.dtype if grad is not None else p.dtype, device=p.device
                )
                staged.append(_Staged(len(entries), p, buf, gbuf))
                param_ptr = buf.data_ptr()

            step_ptr_index = -1
            if opt._has_step:
                step = state.get("step", 0.0)
                step_values.append(float(step))
                step_owners.append(state)
                step_ptr_index = len(step_values) - 1
            grad_dtype = (
                grad.dtype if grad is not None else (getattr(p, "grad_dtype", None) or p.dtype)
            )
            entry_of.append(len(entries))
            entries.append(
                [
                    param_ptr,
                    *ptrs,
                    p.numel(),
                    DTYPE_CODES[p.dtype],
                    DTYPE_CODES[grad_dtype],
                    DTYPE_CODES[state_dtype],
                    gi,
                    step_ptr_index,
                    fresh,
                    grad_dtype,
                ]
            )
            entry_params.append(p)

    # torch keeps one 0-dim float32 'step' tensor per param; ours are views of one buffer the
    # engine increments in place, so state_dict() shows torch's layout with no per-step copies.
    # A device engine counts on the params' device (no host sync, and a step captured in a CUDA
    # graph counts on replay), as torch's capturable and fused optimizers do.
    steps = None
    if step_values:
        steps = torch.tensor(step_values, dtype=torch.float32, device=device)
        for i, state in enumerate(step_owners):
            state["step"] = steps[i]
    base = steps.data_ptr() if steps is not None else 0
    for e in entries:
        e[9] = base + 4 * e[9] if e[9] >= 0 else 0

    engine = C.Plan(
        opt._kind,
        opt.param_groups,
        opt.state,
        params,
        entry_of,
        layouts,
        strides,
        [tuple(e) for e in entries],
        device=device,
    )
    workspace = None
    if engine.workspace_bytes:
        workspace = torch.zeros(engine.workspace_bytes, dtype=torch.uint8, device=device)
        engine.bind_workspace(workspace.data_ptr(), _current_stream(device))
    return Plan(
        engine,
        opt.param_groups,
        opt.state,
        steps,
        entry_params,
        staged,
        device=device,
        workspace=workspace,
    )
