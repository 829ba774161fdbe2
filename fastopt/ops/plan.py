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

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from fastopt._ext import require_C
from fastopt.ops import catalog, dtensor, quant8
from fastopt.ops.catalog import MODE_STATE_KEYS
from fastopt.ops.device import DeviceUse

if TYPE_CHECKING:
    from fastopt.optim.base import FusedOptimizer

# memory layouts of a param, as the engine reads them (see csrc/plan.h)
CONTIGUOUS, DENSE, STAGED = "contiguous", "dense", "staged"


@dataclass(frozen=True)
class StateSpec:
    """The state tensors an optimizer keeps for the params of a group (names of its op's state
    keys; each goes to the engine slot the op list gives it)."""

    names: tuple[str, ...]
    # a buffer torch creates from the first grad (SGD's momentum_buffer): new ones start "fresh"
    fresh: str | None = None
    # states a group flag may switch on mid-run (amsgrad's max_exp_avg_sq): they start at zero
    # next to existing ones. Any other missing state next to existing ones is an error, as the
    # KeyError torch.optim raises there.
    late: tuple[str, ...] = ()
    # states that start at a group value instead of zero (Adagrad's 'sum': state -> group key)
    init: tuple[tuple[str, str], ...] = ()

    def required(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if n != self.fresh and n not in self.late)


@dataclass
class _Staged:
    """A param that is not dense: stepped through contiguous copies."""

    entry: int
    param: torch.Tensor  # the group's param (its grad says whether it was stepped)
    data: torch.Tensor  # its memory: the param, or a DTensor's local shard
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
    # DTensor params: how their norms combine over the shards' meshes, or why they cannot
    reductions: dtensor.Reductions | None = None
    no_reductions: str | None = None
    # the op's per-tensor norms are of sharded DTensors: their sums are all-reduced per mesh
    # between the engine's phases (GradPipeline::tensor_out / tensor_in)
    tensor_sums: bool = False
    # per entry, the tensor read in its grad slot instead of its .grad (averaged models)
    entry_sources: list[torch.Tensor] | None = None
    # CUDA plans: the streams and graph captures of its buffers (ops/device.py)
    device_use: DeviceUse | None = None

    def stream(self) -> int:
        """The cudaStream_t to launch on: torch's current stream of the params' device, with
        the plan's buffers made safe to use there (and kept for a graph being captured)."""
        if self.device_use is None:
            return 0
        stream = torch.cuda.current_stream(self.device)
        self.device_use.before_run(
            stream, lambda: [self] + [self._grad(e) for e in range(len(self.entry_params))]
        )
        return stream.cuda_stream

    def is_current(self, optimizer: FusedOptimizer) -> bool:
        return self.param_groups is optimizer.param_groups and self.state is optimizer.state

    def _grad(self, entry: int) -> torch.Tensor | None:
        if self.entry_sources is not None:
            return self.entry_sources[entry]
        return self.entry_params[entry].grad

    def supply_grads(self, fixups: list[int]) -> bool:
        """Give the engine the grads it could not take as they are (staged or other layout).

        Returns False when a grad cannot be used at all (sparse, or not of its param's shape):
        a rebuild then reports it.
        """
        staged = {s.entry: s for s in self.staged}
        for e in fixups:
            p = dtensor.local(self.entry_params[e])
            g = self._grad(e)
            g = None if g is None else dtensor.local(g)
            if g is not None and (g.layout != torch.strided or g.shape != p.shape):
                return False
        for entry in fixups:
            param = dtensor.local(self.entry_params[entry])
            grad = self._grad(entry)
            grad = None if grad is None else dtensor.local(grad)
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
            if self._grad(s.entry) is not None:
                s.data.copy_(s.param_buf)
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


def _layout(p: torch.Tensor) -> str:
    if p.is_contiguous():
        return CONTIGUOUS
    if is_non_overlapping_and_dense(p):
        return DENSE
    return STAGED


def _where(opt: FusedOptimizer, gi: int, pi: int, p: torch.Tensor) -> str:
    return (
        f"{type(opt).__name__}: param group {gi}, param {pi} "
        f"(shape {tuple(p.shape)}, dtype {p.dtype}, device {p.device})"
    )


def _is_plain_tensor(t: torch.Tensor) -> bool:
    """A tensor whose data is its own storage: torch.Tensor, nn.Parameter, or a subclass that
    overrides neither __torch_function__ nor __torch_dispatch__. Wrapper subclasses (DTensor,
    FakeTensor, lazy params) are not: their data pointer is not the values they stand for."""
    cls = type(t)
    if cls is torch.Tensor or cls is torch.nn.Parameter:
        return True
    if cls.__torch_dispatch__ is not torch.Tensor.__torch_dispatch__:
        return False
    fn = cls.__torch_function__
    return fn is torch._C._disabled_torch_function_impl or (
        getattr(fn, "__func__", None) is torch.Tensor.__torch_function__.__func__
    )


def _check_tensor(where: str, what: str, t: torch.Tensor) -> None:
    if not _is_plain_tensor(t):
        name = type(t).__name__
        raise TypeError(
            f"{where}: {what} is a {type(t).__module__}.{name}; fused optimizers update plain "
            "tensors, nn.Parameters whose data is their own storage, and DTensors (FSDP2)"
        )


def _check_storage(where: str, what: str, t: torch.Tensor) -> None:
    """The tensor's elements lie inside its storage (a storage resized under a live tensor
    leaves them outside: torch's own ops then read freed memory)."""
    if t.numel() == 0:
        return
    span = 1 + sum((n - 1) * st for n, st in zip(t.shape, t.stride()))
    need = (t.storage_offset() + span) * t.element_size()
    have = t.untyped_storage().nbytes()
    if have < need or t.data_ptr() == 0:
        raise RuntimeError(
            f"{where}: {what} needs {need} bytes of storage but its storage has {have} (was the "
            "storage resized under it?)"
        )


def _state_tensor(
    where: str,
    name: str,
    value: Any,
    param: torch.Tensor,
    p: torch.Tensor,
    saved: dict | None = None,
) -> torch.Tensor | None:
    """An existing state tensor of ``param`` (whose memory is ``p``), checked; None: absent.
    With ``saved`` (the param's state dict), 8-bit codes (uint8) are accepted when their absmax
    and map are there too (see :mod:`fastopt.ops.quant8`)."""
    if value is None:
        return None
    if saved is not None and isinstance(value, torch.Tensor) and value.dtype == torch.uint8:
        _check_codes(where, name, value, p, saved)
        return value
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{where}: state '{name}' is a {type(value).__name__}, not a tensor")
    if dtensor.is_dtensor(param):
        dtensor.check_like(where, f"state '{name}'", value, param)
        value = value._local_tensor
    _check_tensor(where, f"state '{name}'", value)
    if value.shape != p.shape:
        raise ValueError(
            f"{where}: state '{name}' has shape {tuple(value.shape)}, its param {tuple(p.shape)}"
        )
    if not value.is_floating_point() or value.layout != torch.strided:
        raise TypeError(f"{where}: state '{name}' is {value.dtype}, not a dense floating tensor")
    _check_storage(where, f"state '{name}'", value)
    return value  # the local shard of a DTensor state


def _check_codes(
    where: str, name: str, codes: torch.Tensor, p: torch.Tensor, saved: dict[str, Any]
) -> None:
    if dtensor.is_dtensor(codes):
        raise NotImplementedError(f"{where}: 8-bit state '{name}' of a DTensor param")
    _check_tensor(where, f"state '{name}'", codes)
    if codes.shape != p.shape or codes.layout != torch.strided:
        raise ValueError(
            f"{where}: 8-bit state '{name}' has shape {tuple(codes.shape)}, its param "
            f"{tuple(p.shape)}"
        )
    if not is_non_overlapping_and_dense(codes):
        raise ValueError(f"{where}: 8-bit state '{name}' is not dense")
    absmax = saved.get(name + quant8.ABSMAX_SUFFIX)
    qmap = saved.get(name + quant8.QMAP_SUFFIX)
    blocks = quant8.blocks_of(p.numel())
    if not (
        isinstance(absmax, torch.Tensor)
        and absmax.dtype == torch.float32
        and absmax.shape == (blocks,)
    ):
        raise ValueError(
            f"{where}: 8-bit state '{name}' needs '{name}{quant8.ABSMAX_SUFFIX}', a float32 "
            f"tensor of {blocks} values (one per block of {quant8.block()})"
        )
    if not (isinstance(qmap, torch.Tensor) and qmap.is_floating_point() and qmap.shape == (256,)):
        raise ValueError(
            f"{where}: 8-bit state '{name}' needs '{name}{quant8.QMAP_SUFFIX}', the 256 values "
            "its codes index"
        )


def _overlapping(spans: list[tuple[int, int, str]]) -> tuple[str, str] | None:
    """Two of (start, end, where) whose byte ranges overlap, if any."""
    spans = sorted(s for s in spans if s[1] > s[0])
    for a, b in zip(spans, spans[1:]):
        if b[0] < a[1]:
            return a[2], b[2]
    return None


@dataclass
class _Item:
    """One param of one group as validated: what packing needs."""

    gi: int
    param: torch.Tensor  # the group's param (a DTensor under FSDP2)
    p: torch.Tensor  # the memory the engine updates: the param, or its local shard
    where: str
    layout: str
    names: tuple[str, ...]
    states: dict[str, torch.Tensor | None] | None  # None: no entry until it gets a grad
    # existing states (local shards of DTensor states) by name


def _validate(
    opt: FusedOptimizer, C: Any, sources: Sequence[torch.Tensor] | None = None
) -> tuple[list[_Item], torch.device | None]:
    """Every check a step makes, before anything changes: a rejected step leaves the optimizer
    (state, steps, params) exactly as it was. ``sources``: see :func:`build_plan`."""
    items: list[_Item] = []
    device: torch.device | None = None
    seen: dict[int, str] = {}
    spans: list[tuple[int, int, str]] = []
    for gi, group in enumerate(opt.param_groups):
        spec = opt._state_spec(group)
        for pi, param in enumerate(group["params"]):
            if not isinstance(param, torch.Tensor):
                raise TypeError(
                    f"{type(opt).__name__}: param group {gi}, param {pi} is a "
                    f"{type(param).__name__}, not a tensor"
                )
            where = _where(opt, gi, pi, param)
            if id(param) in seen:
                raise ValueError(
                    f"{where}: the same param appears twice (also {seen[id(param)]}); a fused "
                    "step updates each param once"
                )
            seen[id(param)] = where
            grad = param.grad if sources is None else sources[len(items)]
            if dtensor.is_dtensor(param):
                dtensor.check_param(where, param)
                if grad is not None:
                    dtensor.check_like(where, "its grad", grad, param)
                    grad = grad._local_tensor
                p = param._local_tensor
            else:
                _check_tensor(where, "the param", param)
                p = param
            if p.dtype not in catalog.dtype_codes():
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
            _check_storage(where, "the param", p)
            if group.get("capturable") and C.engine_for(p.device.type) == "cpu":
                raise RuntimeError(
                    f"{where}: capturable=True needs params on a CUDA device (a step captured "
                    "in a CUDA graph)"
                )
            if grad is not None:
                _check_tensor(where, "its grad", grad)
                if grad.is_sparse or grad.layout != torch.strided:
                    raise RuntimeError(
                        f"{where}: sparse gradients are not supported by fused optimizers"
                    )
                if grad.dtype not in (p.dtype, torch.float32):
                    raise TypeError(
                        f"{where}: grad dtype {grad.dtype} must be {p.dtype} or float32"
                    )
                if grad.shape != p.shape or grad.device != p.device:
                    raise ValueError(
                        f"{where}: grad of shape {tuple(grad.shape)} on {grad.device} for a "
                        "param of that shape and device"
                    )
                _check_storage(where, "its grad", grad)
            layout = _layout(p)
            if layout != STAGED and p.numel():
                start = p.data_ptr()
                spans.append((start, start + p.numel() * p.element_size(), where))
            saved = opt.state.get(param)
            saved = saved if isinstance(saved, dict) else {}
            states = {n: _state_tensor(where, n, saved.get(n), param, p, saved) for n in spec.names}
            if quantizes(opt, param) and dtensor.is_dtensor(param):
                raise NotImplementedError(
                    f"{where}: state_dtype='8bit' for DTensor params (FSDP2): the blocks of "
                    "a shard are not those of the whole tensor yet"
                )
            aux_key = aux_key_of(opt, p)
            if aux_key is not None:  # checked here, created below when missing
                states[aux_key] = _state_tensor(where, aux_key, saved.get(aux_key), param, p)
            present = [n for n in spec.names if states[n] is not None]
            has_step = catalog.op(opt._kind).has_step
            if present or (has_step and "step" in saved):
                missing = [n for n in spec.required() if states[n] is None]
                if missing:
                    raise ValueError(
                        f"{where}: its state has {sorted(saved)} but no '{missing[0]}' "
                        "(torch.optim raises KeyError here); clear the param's whole state "
                        "(optimizer.state[p].clear()) to restart it"
                    )
            if has_step and "step" in saved:
                step = saved["step"]
                if isinstance(step, torch.Tensor) and step.numel() != 1:
                    raise ValueError(f"{where}: state 'step' has {step.numel()} elements, not 1")
                try:
                    float(step)
                except (TypeError, ValueError):
                    raise TypeError(f"{where}: state 'step' is {step!r}, not a number") from None
            has_states = bool(spec.names) and len(present) == len(spec.names)
            items.append(
                _Item(
                    gi,
                    param,
                    p,
                    where,
                    layout,
                    spec.names,
                    states if grad is not None or has_states else None,
                )
            )
    if catalog.op(opt._kind).reductions and dtensor.any_sharded(it.param for it in items):
        _, why_not = dtensor.reductions([it.param for it in items], [-1] * len(items))
        if why_not:
            raise NotImplementedError(
                f"{type(opt).__name__} needs each tensor's norm, which sharded DTensors get "
                f"from one all-reduce of their shards' sums; {why_not} do not allow it yet"
            )
    clash = _overlapping(spans)
    if clash:
        raise ValueError(
            f"{clash[1]} shares memory with {clash[0]}; a fused step updates each param's "
            "memory once"
        )
    try:
        C.Plan.check_hypers(opt._kind, opt.param_groups, device)
    except ValueError as e:
        raise ValueError(f"{type(opt).__name__}: {e}") from None
    return items, device


def quantizes(opt: Any, param: torch.Tensor) -> bool:
    """Are this param's states 8-bit? By its global size (a DTensor's ``numel()``), so every
    process and every sharding makes the same choice."""
    return opt.precision.state_dtype == "8bit" and param.numel() >= quant8.min_elems()


def aux_key_of(opt: FusedOptimizer, p: torch.Tensor) -> str | None:
    """The state key of the precision buffer a param of this dtype needs, if any."""
    return MODE_STATE_KEYS.get(opt.precision.mode(p.dtype))


def _new_state(
    like: torch.Tensor, dtype: torch.dtype, layout: str, value: float = 0.0
) -> torch.Tensor:
    """A state filled with ``value``, laid out like the engine walks ``like``."""
    if layout == DENSE:
        return torch.full_like(like, value, dtype=dtype)
    return torch.full(like.shape, value, dtype=dtype, device=like.device)


def _as_state(value: torch.Tensor, like: torch.Tensor, dtype: torch.dtype, layout: str):
    """A (validated) state tensor with the given dtype, laid out like the engine walks ``like``."""
    ok = value.dtype == dtype and value.device == like.device
    if layout == DENSE:
        ok = ok and value.stride() == like.stride()
    else:
        ok = ok and value.is_contiguous()
    return value if ok else _new_state(like, dtype, layout).copy_(value)


def _quantized_state(
    state: dict[str, Any],
    name: str,
    value: torch.Tensor | None,
    p: torch.Tensor,
    layout: str,
    signed: bool,
    fill: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The 8-bit state ``name`` of param memory ``p`` (codes laid out as the engine walks ``p``,
    absmax), stored in ``state``: kept as it is, or quantized from float values (a torch or
    float32 state dict, or new: ``fill``), or requantized (another map or layout)."""
    like = p if layout == DENSE else torch.empty(p.shape, dtype=torch.uint8, device=p.device)
    qmap = quant8.qmap(signed)
    absmax_key, qmap_key = name + quant8.ABSMAX_SUFFIX, name + quant8.QMAP_SUFFIX
    if value is None and fill == 0.0:  # every code decodes to 0 with absmax 0
        codes = torch.full_like(like, quant8.zero_code(signed), dtype=torch.uint8)
        absmax = torch.zeros(quant8.blocks_of(p.numel()), dtype=torch.float32, device=p.device)
        state[name], state[absmax_key], state[qmap_key] = codes, absmax, qmap
        return codes, absmax
    if value is None:
        values = torch.full(p.shape, fill, dtype=torch.float32)
    elif value.dtype != torch.uint8:
        values = value
    else:
        absmax = state[absmax_key]
        same_layout = value.stride() == like.stride() or p.numel() <= 1
        if torch.equal(state[qmap_key].cpu(), qmap) and same_layout:
            codes = value if value.device == p.device else value.to(p.device)
            absmax = absmax.to(p.device).contiguous()
            state[name], state[absmax_key], state[qmap_key] = codes, absmax, qmap
            return codes, absmax
        values = quant8.dequantize(value, absmax, state[qmap_key])
    codes, absmax = quant8.quantize(values, signed, like=like)
    state[name], state[absmax_key], state[qmap_key] = codes, absmax, qmap
    return codes, absmax


def build_plan(opt: FusedOptimizer, sources: Sequence[torch.Tensor] | None = None) -> Plan:
    """Validate every param of every group, then create missing states and pack the table.

    ``sources``: None (the engine reads each param's ``.grad``), or one tensor per param (in
    the groups' order) that the engine reads in its grad slot instead, every step: the source
    model's tensors of an averaged model (``opt`` is then its averaging table). A source is
    validated as a grad; it must be a plain tensor of the param's shape, device and dtype (or
    float32).
    """
    C = require_C()
    op = catalog.op(opt._kind)
    codes = catalog.dtype_codes()
    spec = opt._state_spec_all()
    if sources is not None:
        sources = list(sources)
        if len(sources) != sum(len(g["params"]) for g in opt.param_groups):
            raise ValueError("build_plan: sources must have one tensor per param")
    items, device = _validate(opt, C, sources)

    # nothing below raises for a bad input: states are created only once all of it is valid
    params: list[torch.Tensor] = []
    entry_of: list[int] = []
    layouts: list[int] = []
    strides: list[Any] = []
    entries: list[dict[str, Any]] = []
    entry_params: list[torch.Tensor] = []
    entry_sources: list[torch.Tensor] = []
    staged: list[_Staged] = []
    step_values: list[float] = []
    step_owners: list[dict] = []
    for item in items:
        param, p, layout = item.param, item.p, item.layout
        tensor_id = len(params)  # its index among the optimizer's params: its rounding key
        params.append(param)
        layouts.append(catalog.layout(layout))
        strides.append(tuple(p.stride()) if layout == DENSE else None)
        if item.states is None:
            entry_of.append(-1)  # nothing to do until it has a grad (then: rebuild)
            continue
        grad = param.grad if sources is None else sources[tensor_id]
        grad = None if grad is None else dtensor.local(grad)
        state_dtype = opt._state_dtype_for(p)
        state = opt.state[param] if item.names or op.has_step or aux_key_of(opt, p) else {}
        group = opt.param_groups[item.gi]
        init = dict(opt._state_spec(group).init)
        fresh = 0
        tensors: list[Any] = [None] * catalog.max_states()
        quantized = quantizes(opt, param)
        absmaxes: list[Any] = [None] * catalog.max_states() if quantized else []
        for name in item.names:
            value = item.states[name]
            if quantized:
                signed = name not in op.unsigned_states
                fill = float(group[init[name]]) if name in init else 0.0
                if value is None:
                    fresh |= int(name == spec.fresh)
                qcodes, absmax = _quantized_state(state, name, value, p, layout, signed, fill)
                tensors[op.slot(name)] = qcodes
                absmaxes[op.slot(name)] = absmax
                continue
            if value is not None and value.dtype == torch.uint8:  # 8-bit into float32 states
                value = quant8.dequantize(
                    value, state[name + quant8.ABSMAX_SUFFIX], state[name + quant8.QMAP_SUFFIX]
                )
                del state[name + quant8.ABSMAX_SUFFIX], state[name + quant8.QMAP_SUFFIX]
                state[name] = value
            if value is not None:
                shard = _as_state(value, p, state_dtype, layout)
                if shard is not value:  # converted to the state dtype or the engine's layout
                    state[name] = dtensor.like(param, shard) if param is not p else shard
            else:
                fill = float(group[init[name]]) if name in init else 0.0
                shard = _new_state(p, state_dtype, layout, fill)
                fresh |= int(name == spec.fresh)
                state[name] = dtensor.like(param, shard) if param is not p else shard
            # the engine's memory: the plan checks its address each step
            tensors[op.slot(name)] = shard

        mode = opt.precision.mode(p.dtype)
        aux = None
        aux_key = aux_key_of(opt, p)
        if aux_key is not None:
            # a master copy starts as the param; a compensation at zero
            aux_dtype = torch.float32 if mode == "master" else p.dtype
            value = item.states.get(aux_key)
            if value is not None:
                aux = _as_state(value, p, aux_dtype, layout)
            else:
                aux = _new_state(p, aux_dtype, layout)
                if mode == "master":
                    aux.copy_(p.detach())
            if aux is not value:
                state[aux_key] = dtensor.like(param, aux) if param is not p else aux

        param_ptr = p.data_ptr()
        if layout == STAGED:
            buf = p.detach().contiguous()
            gbuf = torch.empty(
                p.shape, dtype=grad.dtype if grad is not None else p.dtype, device=p.device
            )
            staged.append(_Staged(len(entries), param, p, buf, gbuf))
            param_ptr = buf.data_ptr()

        step_index = -1
        if op.has_step:
            step_values.append(float(state.get("step", 0.0)))
            step_owners.append(state)
            step_index = len(step_values) - 1
        grad_dtype = (
            grad.dtype if grad is not None else (getattr(param, "grad_dtype", None) or p.dtype)
        )
        entry_of.append(len(entries))
        entries.append(
            dict(
                param=param_ptr,
                states=tensors,
                numel=p.numel(),
                param_dtype=codes[p.dtype],
                grad_dtype=codes[grad_dtype],
                state_dtype=catalog.quant_state_code() if quantized else codes[state_dtype],
                group=item.gi,
                step=step_index,  # an index into the step buffer below, then its view
                fresh=fresh,
                expected_grad_dtype=grad_dtype,
                param_mode=catalog.param_mode(mode),
                aux=aux,
                tensor_id=tensor_id,
                absmax=absmaxes,
            )
        )
        entry_params.append(param)
        if sources is not None:
            entry_sources.append(sources[tensor_id])

    # torch keeps one 0-dim float32 'step' tensor per param; ours are views of one buffer the
    # engine increments in place, so state_dict() shows torch's layout with no per-step copies.
    # A device engine counts on the params' device (no host sync, and a step captured in a CUDA
    # graph counts on replay), as torch's capturable and fused optimizers do.
    steps = None
    if step_values:
        steps = torch.tensor(step_values, dtype=torch.float32, device=device)
        for i, state in enumerate(step_owners):
            state["step"] = steps[i]
    for e in entries:  # the view itself: the plan re-checks it each step (`.data =` moves it)
        e["step"] = step_owners[e["step"]]["step"] if e["step"] >= 0 else None

    held = [t for t in (steps,) if t is not None]
    held += [t for s in staged for t in (s.param_buf, s.grad_buf)]
    engine = C.Plan(
        opt._kind,
        opt.param_groups,
        opt.state,
        params,
        entry_of,
        layouts,
        strides,
        [C.Entry(**e) for e in entries],
        held,
        sharded=[int(dtensor.is_dtensor(p)) for p in params],
        device=device,
        sources=sources,
    )
    reductions, why_not = dtensor.reductions(params, entry_of)
    workspace = None
    if engine.workspace_bytes:
        workspace = torch.zeros(engine.workspace_bytes, dtype=torch.uint8, device=device)
        engine.bind_workspace(workspace.data_ptr(), _current_stream(device))
    device_use = None
    if device is not None and device.type == "cuda":
        stream = torch.cuda.current_stream(device)
        ready = None
        if not torch.cuda.is_current_stream_capturing():
            ready = torch.cuda.Event()
            ready.record(stream)  # after the zeroing, the upload and the new states
        device_use = DeviceUse(stream.cuda_stream, ready, [workspace, *held])  # held: steps, staged
    return Plan(
        engine,
        opt.param_groups,
        opt.state,
        steps,
        entry_params,
        staged,
        device=device,
        workspace=workspace,
        reductions=reductions,
        no_reductions=why_not,
        tensor_sums=bool(op.reductions) and dtensor.any_sharded(params),
        entry_sources=entry_sources if sources is not None else None,
        device_use=device_use,
    )


def refreshed_plan(
    owner: Any, plan: Plan | None, sources: Sequence[torch.Tensor] | None = None
) -> Plan:
    """``plan`` refreshed for this step: rebuilt when it is not the owner's or the refresh finds
    a structural change, with the grads it cannot take as they are supplied."""
    if plan is None or not plan.is_current(owner):
        plan = build_plan(owner, sources)
    status, reason, fixups = plan.engine.refresh()
    if status:
        plan = build_plan(owner, sources)
        status, reason, fixups = plan.engine.refresh()
        if status:
            raise RuntimeError(f"{type(owner).__name__}: cannot build the step table: {reason}")
    if fixups:
        with torch.no_grad():
            if not plan.supply_grads(fixups):
                build_plan(owner, sources)  # raises the error naming the param at fault
    return plan
