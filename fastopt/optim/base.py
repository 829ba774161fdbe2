"""FusedOptimizer: a torch.optim.Optimizer whose step is one engine call for all groups."""

from __future__ import annotations

import dataclasses
import inspect
import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from itertools import chain
from typing import Any, ClassVar

import torch

from fastopt.ops import catalog, quant8
from fastopt.ops.catalog import MODE_STATE_KEYS
from fastopt.ops.plan import Plan, StateSpec, refreshed_plan
from fastopt.optim import compiled
from fastopt.optim.precision import Precision, StateDtype

__all__ = ["FusedOptimizer", "Precision", "StateDtype"]


def check_number(name: str, value: Any) -> None:
    """A hyperparameter that must be a plain number (a bool or a str is a config mistake)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"Invalid {name}: {value!r} is not a number")


def check_lr(lr: Any) -> None:
    """torch's checks of ``lr`` (a number or a one-element tensor), with its messages."""
    if isinstance(lr, torch.Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
    else:
        check_number("learning rate", lr)
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def check_betas(betas: Any) -> None:
    """A pair of numbers or of one-element tensors, never a mix (torch's rule); torch ignores a
    third item, which is always a mistake in a config, so it is refused here."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    tensors = [isinstance(b, torch.Tensor) for b in betas]
    if any(tensors) and not all(tensors):
        raise ValueError("betas must be either both floats or both Tensors")
    for i, b in enumerate(betas):
        if isinstance(b, torch.Tensor):
            if b.numel() != 1:
                raise ValueError(f"Tensor betas[{i}] must be 1-element")
        else:
            check_number(f"beta parameter at index {i}", b)


def check_momentum_args(
    lr: float, momentum: float, dampening: float, weight_decay: float, nesterov: bool
) -> None:
    """torch.optim.SGD's argument checks, with its messages (shared by SGD and LARS)."""
    check_lr(lr)
    for name, value in (("momentum", momentum), ("dampening", dampening)):
        check_number(name, value)
    check_number("weight_decay", weight_decay)
    if momentum < 0.0:
        raise ValueError(f"Invalid momentum value: {momentum}")
    if weight_decay < 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")


def _norm_kind(norm_type: float | str) -> tuple[str, float]:
    """The engine's norm type (l2, l1, inf, p) and exponent for a torch-style ``norm_type``."""
    p = float(norm_type)  # accepts 'inf'
    if p == 2.0:
        return "l2", 2.0
    if p == 1.0:
        return "l1", 1.0
    if p == math.inf:
        return "inf", p
    if p > 0 and math.isfinite(p):
        return "p", p
    raise ValueError(f"norm_type must be a positive number or 'inf', got {norm_type!r}")


class FusedOptimizer(torch.optim.Optimizer):
    """Base class of the fused optimizers.

    A step gathers every param with a grad, across all param groups, into one cached table and
    updates them in one engine call with per-tensor hyperparameters read from the groups, so
    changing ``group['lr']`` (or any other value) takes effect at the next step. State dicts use
    torch's keys and layout.

    Every fused optimizer also takes the keywords of :class:`~fastopt.optim.precision.Precision`
    (``state_dtype``, ``master_weights``, ``bf16_rounding``, ``kahan_summation``,
    ``rounding_seed``): where its states live and how 16-bit params are written.
    """

    _kind: ClassVar[str]  # the engine op it runs (csrc/core/ops.h; fastopt.ops.catalog)
    # the op's step count t is the group's 'step' key, counted here once per step call (timm's
    # Lamb and Adan keep it so); ops with a per-param count have it in the engine (has_step)
    _counts_group_steps: ClassVar[bool] = False
    # group keys a state dict from an older torch may lack, with the values torch's own
    # __setstate__ fills in; and keys the class forces on load (AdamW: decoupled decay)
    _load_defaults: ClassVar[dict[str, Any]] = {}
    _load_forced: ClassVar[dict[str, Any]] = {}

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        **precision: Any,
    ) -> None:
        unknown = sorted(set(precision) - set(Precision.keys()))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected keyword "
                f"{', '.join(repr(k) for k in unknown)}; it accepts: "
                f"{', '.join(inspect.signature(type(self)).parameters)}"
            )
        self.precision = Precision(**precision)
        if self.precision.stochastic and defaults.get("capturable"):
            raise ValueError(
                "bf16_rounding='stochastic' draws new bits each step from a count the host "
                "advances, which a captured CUDA graph would replay: use capturable=False"
            )
        self._plan: Plan | None = None
        super().__init__(params, {**defaults, **self.precision.group_defaults()})
        compiled.register(self)

    @property
    def state_dtype(self) -> StateDtype:
        return self.precision.state_dtype

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass taking ``**precision`` shows the precision keywords in its signature (help,
        IDEs and the registry's "unexpected keyword" errors read it)."""
        super().__init_subclass__(**kwargs)
        sig = inspect.signature(cls.__init__)
        params = list(sig.parameters.values())[1:]  # without self
        if any(p.kind is p.VAR_KEYWORD and p.name == "precision" for p in params):
            params = [p for p in params if p.kind is not p.VAR_KEYWORD]
            params += [
                inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default)
                for f in dataclasses.fields(Precision)
            ]
        cls.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        params = param_group["params"]
        params = [params] if isinstance(params, torch.Tensor) else list(params)
        index = len(getattr(self, "param_groups", ()))
        seen: set[int] = set()
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(
                    f"{type(self).__name__}: param group {index} lists param {i} twice (torch.optim "
                    "warns and applies such a param twice); list each param once"
                )
            seen.add(id(p))
        super().add_param_group({**param_group, "params": params})
        if "_op_handle" in self.__dict__:  # (torch's __init__ adds the first groups)
            compiled.sync_params(self)

    # --- what each optimizer defines -----------------------------------------------------
    def _state_spec(self, group: dict[str, Any]) -> StateSpec:
        """The state tensors a param of this group needs."""
        raise NotImplementedError

    def _state_spec_all(self) -> StateSpec:
        return self._state_spec(self.defaults)

    def _rescale_max_norm(self) -> float:
        """LAMB's global-norm rescaling of the grads (``max_grad_norm``); 0: none."""
        return 0.0

    @property
    def _has_step(self) -> bool:
        """The engine counts a per-param ``step`` state (torch's layout)."""
        return catalog.op(self._kind).has_step

    # --- step ------------------------------------------------------------------------------
    def _state_dtype_for(self, p: torch.Tensor) -> torch.dtype:
        return p.dtype if self.state_dtype == "param" else torch.float32

    def _current_plan(self) -> Plan:
        old = self._plan
        plan = self._plan = refreshed_plan(self, old)
        if old is not None and plan is not old:
            self._retire_plan(old)
        return plan

    def _retire_plan(self, plan: Plan | None) -> None:
        """A plan is dropped: one captured in a CUDA graph keeps its tensors alive with the
        optimizer (fastopt/ops/device.py)."""
        if plan is not None and plan.device_use is not None:
            plan.device_use.retire(self.__dict__.setdefault("_graph_held", []), type(self).__name__)

    def step(  # type: ignore[override]
        self, closure: Callable[[], float] | None = None, **pipeline: Any
    ) -> float | None:
        """One optimizer step; keyword arguments, if any, are :meth:`fused_step`'s.

        (Wrappers such as ``ZeroRedundancyOptimizer`` forward their ``step`` keywords here.)
        Inside ``torch.compile`` the step is one call of the custom op ``fastopt::step``
        (:mod:`fastopt.optim.compiled`).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling():
            compiled.compiled_step(self, pipeline)
        else:
            self._step_eager(pipeline)
        return loss

    def _step_eager(self, pipeline: dict[str, Any]) -> None:
        if pipeline or self._rescale_max_norm():
            self._fused_step_eager(**pipeline)
        else:
            plan = self._begin_step()
            if plan.tensor_sums:
                self._run_phases(plan, {})
            else:
                self._run(plan)

    def _begin_step(self) -> Plan:
        """The refreshed plan of this step, group step counts advanced first (they are read as
        hyperparameters); a step refused here leaves them as they were."""
        counted = ("step",) if self._counts_group_steps else ()
        if self.precision.stochastic:
            counted += (catalog.rounding_keys()[1],)  # new rounding bits each step
        if not counted:
            return self._current_plan()
        before = [{key: group.get(key) for key in counted} for group in self.param_groups]
        for group in self.param_groups:
            for key in counted:
                group[key] = int(group.get(key) or 0) + 1
        try:
            return self._current_plan()
        except BaseException:
            for group, saved in zip(self.param_groups, before):
                for key, step in saved.items():
                    if step is None:
                        group.pop(key, None)
                    else:
                        group[key] = step
            raise

    def fused_step(
        self,
        *,
        max_norm: float | None = None,
        norm_type: float | str = 2.0,
        loss_scale: torch.Tensor | None = None,
        found_inf: torch.Tensor | None = None,
        norm_out: torch.Tensor | None = None,
        process_group: Any = None,
    ) -> None:
        """One step through the fused gradient pipeline: one reduction pass, one update pass.

        Grads are read as ``(grad / loss_scale) * clip_coef`` and left untouched in memory.

        Args:
            max_norm: clip the total norm of all grads to this value (``clip_grad_norm_``).
            norm_type: 2, 1, ``inf`` (or ``'inf'``) or any p > 0 — of the total norm.
            loss_scale: float32 tensor holding the loss scale the grads carry.
            found_inf: float32 tensor that receives 1.0 when a grad is inf/nan; the step is
                then skipped (GradScaler semantics). Without it non-finite grads are applied.
            norm_out: float32 tensor that receives the pre-clip total norm of the unscaled grads.
            process_group: a ``torch.distributed`` group whose processes each hold a shard of
                the params (``ZeroRedundancyOptimizer``): the norm (and so the clip factor and
                the inf/nan verdict) is that of all shards' grads, all-reduced between the
                engine's reduction pass and its update pass.

        All tensors are 0-dim or one-element float32 on the params' device; nothing here
        synchronises with the host (on a GPU every step of the pipeline runs on the device, on
        torch's current stream).

        Inside ``torch.compile`` this is one call of the custom op ``fastopt::step``.
        """
        pipeline = dict(
            max_norm=max_norm,
            norm_type=norm_type,
            loss_scale=loss_scale,
            found_inf=found_inf,
            norm_out=norm_out,
            process_group=process_group,
        )
        if torch.compiler.is_compiling():
            compiled.compiled_step(self, pipeline)
        else:
            self._fused_step_eager(**pipeline)

    def _fused_step_eager(
        self,
        *,
        max_norm: float | None = None,
        norm_type: float | str = 2.0,
        loss_scale: torch.Tensor | None = None,
        found_inf: torch.Tensor | None = None,
        norm_out: torch.Tensor | None = None,
        process_group: Any = None,
    ) -> None:
        norm_kind, p = _norm_kind(norm_type)
        if max_norm is not None and max_norm <= 0:
            raise ValueError(f"max_norm must be positive, got {max_norm}")
        for name, t in (
            ("loss_scale", loss_scale),
            ("found_inf", found_inf),
            ("norm_out", norm_out),
        ):
            if t is not None and (
                t.dtype != torch.float32 or t.numel() != 1 or not t.is_contiguous()
            ):
                raise TypeError(
                    f"fused_step: {name} must be a one-element float32 tensor, got {t.dtype} {tuple(t.shape)}"
                )
        rescale = float(self._rescale_max_norm())
        pipeline = dict(
            loss_scale=loss_scale,
            max_norm=float(max_norm or 0.0),
            rescale_max_norm=rescale,
            norm_type=catalog.norm_type(norm_kind),
            norm_p=p,
            norm_out=norm_out,
            found_inf=found_inf,
        )
        reduces = bool(max_norm) or bool(rescale) or norm_out is not None or found_inf is not None
        plan = self._begin_step()
        if reduces and process_group is None and plan.no_reductions:
            raise NotImplementedError(
                f"{type(self).__name__}: a grad norm or inf/nan check over DTensor params "
                f"needs all-reduces over their shards, which {plan.no_reductions} do not "
                "allow yet"
            )
        over_processes = process_group is not None or plan.reductions is not None
        if (reduces and over_processes) or plan.tensor_sums:
            self._run_phases(plan, pipeline, reduces, process_group, max_reduce=norm_kind == "inf")
        else:
            self._run(plan, **pipeline)

    def _run_phases(
        self,
        plan: Plan,
        pipeline: dict[str, Any],
        reduce_total: bool = False,
        group: Any = None,
        max_reduce: bool = False,
    ) -> None:
        """A step over params sharded across processes, in the engine's phases: with
        ``reduce_total``, the total norm over every process (over ``group``, whose processes
        each hold a shard of the params: ZeRO; else over the meshes of the DTensor params);
        with ``plan.tensor_sums``, the op's per-tensor sums, all-reduced per mesh; then the
        update pass, which reads what was all-reduced."""
        import torch.distributed as dist

        op = dist.ReduceOp.MAX if max_reduce else dist.ReduceOp.SUM

        def buffer(group: Any, size: tuple[int, ...]) -> torch.Tensor:
            device = plan.device
            if device is None:  # this shard is empty: NCCL still needs the buffer on the GPU
                nccl = dist.get_backend(group) == "nccl"
                device = (
                    torch.device("cuda", torch.cuda.current_device())
                    if nccl
                    else torch.device("cpu")
                )
            return torch.zeros(size, dtype=torch.float64, device=device)

        # one refresh for all phases: the grads supplied for the first stay valid for the others
        reduced: dict[str, int] = {}  # data pointers of the buffers below, alive until the end
        meshes = plan.reductions
        if reduce_total:
            single = group if group is not None else meshes.single_group
            if single is not None:  # one all-reduce of the engine's folded total
                total = buffer(single, ())
                self._run(plan, finish=False, **pipeline, total_out=total.data_ptr())
                # folded totals combine by sum (norms 1, 2, p) or max (inf); nan/inf propagate
                dist.all_reduce(total, op=op, group=single)
            else:
                total = self._total_over_meshes(plan, pipeline, op, buffer)
            reduced["total_in"] = total.data_ptr()
        if plan.tensor_sums:  # sums of squares of each sharded tensor's shards, per mesh
            sums = buffer(meshes.meshes[0].group, (plan.engine.tensor_sums_size,))
            self._run(plan, finish=False, **pipeline, **reduced, tensor_out=sums.data_ptr())
            if meshes.single_group is not None:
                dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=meshes.single_group)
            else:  # the rows of each mesh's tensors over its group; whole tensors stay
                rows = sums.view(len(self._all_params()), -1)
                for mesh in meshes.meshes:
                    index = torch.tensor(mesh.tensor_ids, device=rows.device)
                    part = rows.index_select(0, index)
                    dist.all_reduce(part, op=dist.ReduceOp.SUM, group=mesh.group)
                    rows.index_copy_(0, index, part)
            reduced["tensor_in"] = sums.data_ptr()
        self._run(plan, **pipeline, **reduced)

    def _all_params(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @staticmethod
    def _total_over_meshes(
        plan: Plan, pipeline: dict[str, Any], op: Any, buffer: Callable[..., torch.Tensor]
    ) -> torch.Tensor:
        """The folded total norm of tensors on several meshes, or sharded next to whole ones:
        each mesh's tensors' partials all-reduced over its group, whole tensors counted once.
        Reads per-tensor measures on the host (on a GPU: one synchronisation per step)."""
        import torch.distributed as dist

        scale = pipeline["loss_scale"]
        inv_scale = 1.0 if scale is None else float((1.0 / scale.double()).float())
        measures = torch.tensor(
            plan.engine.tensor_norms(
                1,
                pipeline["norm_type"],
                pipeline["norm_p"],
                inv_scale,
                torch.get_num_threads(),
                plan.stream(),
            ),
            dtype=torch.float64,
        )

        def fold(values: torch.Tensor) -> torch.Tensor:  # as the engine combines them
            if values.numel() == 0:
                return torch.zeros((), dtype=torch.float64)
            return values.max() if op == dist.ReduceOp.MAX else values.sum()

        meshes = plan.reductions.meshes
        sharded = {e for mesh in meshes for e in mesh.entries}
        whole = [e for e in range(measures.numel()) if e not in sharded]
        parts = [fold(measures[whole])]
        for mesh in meshes:
            part = buffer(mesh.group, ())
            part.fill_(fold(measures[list(mesh.entries)]))
            dist.all_reduce(part, op=op, group=mesh.group)
            parts.append(part.cpu())
        total = buffer(meshes[0].group, ())
        total.fill_(fold(torch.stack(parts)))
        return total

    def _run(self, plan: Plan | None = None, finish: bool = True, **pipeline: Any) -> None:
        """One engine call on the current plan (refreshed here unless one is given); finish()
        copies staged params back and drops temporary grads once the update is done."""
        plan = plan or self._current_plan()
        for name in ("loss_scale", "norm_out", "found_inf"):
            t = pipeline.pop(name, None)
            if t is None:
                continue
            if plan.device is not None and t.device != plan.device:
                raise ValueError(
                    f"fused_step: {name} is on {t.device}, the params on {plan.device}"
                )
            pipeline[name] = t.data_ptr()
        plan.engine.run(torch.get_num_threads(), stream=plan.stream(), **pipeline)
        if finish and (plan.staged or plan.temporaries):
            with torch.no_grad():
                plan.finish()

    # --- state ------------------------------------------------------------------------------
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved_groups = state_dict["param_groups"]
        saved_state = state_dict["state"]
        super().load_state_dict(state_dict)
        self._plan = None
        # torch casts every floating state to the param's dtype: restore float32 states (master
        # copies always), and drop the buffers of precision modes this optimizer does not use
        # (a checkpoint without them loads too: the first step creates them from the params)
        saved_ids = chain.from_iterable(g["params"] for g in saved_groups)
        params = chain.from_iterable(g["params"] for g in self.param_groups)
        for saved_id, p in zip(saved_ids, params):
            state = self.state.get(p)
            if state is None:
                continue
            mode_key = MODE_STATE_KEYS.get(self.precision.mode(p.dtype))
            for key in MODE_STATE_KEYS.values():
                if key != mode_key:
                    state.pop(key, None)
            for key, value in saved_state.get(saved_id, {}).items():
                # 8-bit states as saved: torch casts every tensor of a floating param to the
                # param's dtype (codes included)
                if isinstance(value, torch.Tensor) and (
                    value.dtype == torch.uint8
                    or key.endswith((quant8.ABSMAX_SUFFIX, quant8.QMAP_SUFFIX))
                ):
                    state[key] = value.to(device=p.device, copy=True)
                    continue
                if (
                    key in state
                    and key != "step"
                    and (self.state_dtype != "param" or key == "master_param")
                    and isinstance(value, torch.Tensor)
                    and value.dtype == torch.float32
                    and p.dtype != torch.float32
                ):
                    state[key] = value.to(device=p.device, copy=True)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["precision"] = self.precision
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict() comes here too, with only 'state' and 'param_groups': what the
        # optimizer was built with stays (a pickle from an older fastopt gets the default)
        if "precision" not in state:
            legacy = state.pop("state_dtype", None)  # a pickle from an older fastopt
            current = getattr(self, "precision", None)
            state["precision"] = current or Precision(state_dtype=legacy or torch.float32)
        super().__setstate__(state)
        if "_op_handle" not in self.__dict__:  # a copy or an unpickled optimizer: its own
            compiled.register(self)
        else:
            compiled.sync_params(self)
        # a group saved without stochastic rounding's keys rounds with this run's seed
        keys = catalog.rounding_keys() if self.precision.stochastic else ()
        rounding = {k: self.defaults[k] for k in keys}
        for group in self.param_groups:
            for key, value in {**self._load_defaults, **rounding}.items():
                group.setdefault(key, value)
            group.update(self._load_forced)
        self._retire_plan(self.__dict__.get("_plan"))  # (load_state_dict comes here too)
        self._plan = None
