"""Gradient-pipeline benchmark: the whole update, not just the step (issue 4).

Two pipelines, each as torch runs it and as fastopt runs it:

* ``clip``: ``torch.nn.utils.clip_grad_norm_(params, 1.0)`` + ``optimizer.step()`` against
  ``fastopt.OptimWrapper(optimizer, clip_grad=dict(max_norm=1.0)).step()``;
* ``amp``: ``GradScaler.unscale_`` + ``clip_grad_norm_`` + ``scaler.step`` + ``scaler.update``
  against ``fastopt.AmpOptimWrapper(..., clip_grad=dict(max_norm=1.0)).step()``.

The torch side uses torch's fused optimizer (``fused=True``), the fastopt side the fused
optimizer inside the wrapper; the benchmark only calls the wrapper's ``step()`` on grads that
are already set, so whatever the wrapper does with a fused optimizer (the fused reduction +
update pass when available) is what gets measured.

The loss scale is 1.0 with growth disabled: torch's pipeline unscales the grads in place, and
since a benchmark reuses the same grads, any other scale would shrink them towards denormals
step after step (which would slow torch down for the wrong reason). Unscaling by 1 costs the
same arithmetic and memory traffic as by any other value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from fastopt.benchmark.candidates import get_optim
from fastopt.benchmark.param_sets import Params, get_set, make_params
from fastopt.benchmark.step import Comparison, Progress, compare, params_step_bytes, release_memory

if TYPE_CHECKING:
    import torch

PIPELINES: tuple[str, ...] = ("clip", "amp")
PIPELINE_IMPLS: tuple[str, ...] = ("fastopt", "torch")
DEFAULT_SETS: tuple[str, ...] = ("gpt2", "mixed2000")
MAX_NORM = 1.0
#: GradScaler arguments of both sides (see the module docstring)
LOSS_SCALE: dict[str, Any] = dict(init_scale=1.0, growth_interval=2**30)


def _optimizer(optim: str, fused_impl: bool, params: Params) -> torch.optim.Optimizer:
    from fastopt.benchmark.candidates import build_optimizer

    return build_optimizer(optim, "fastopt" if fused_impl else "fused", params)


def _zero_loss(params: Params) -> torch.Tensor:
    """A loss whose backward adds zeros to a grad: lets a scaler see one backward pass."""
    return params.tensors[0].sum() * 0.0


def torch_pipeline(pipeline: str, optim: str, params: Params) -> Callable[[], None]:
    """torch's sequence for ``pipeline`` around ``optim(fused=True)``."""
    import torch

    opt = _optimizer(optim, False, params)
    tensors = list(params.tensors)
    clip = torch.nn.utils.clip_grad_norm_
    if pipeline == "clip":

        def run() -> None:
            clip(tensors, MAX_NORM)
            opt.step()

        return run
    if pipeline == "amp":
        scaler = torch.amp.GradScaler(torch.device(params.device).type, **LOSS_SCALE)
        scaler.scale(_zero_loss(params)).backward()  # what a training step does first

        def run_amp() -> None:
            scaler.unscale_(opt)
            clip(tensors, MAX_NORM)
            scaler.step(opt)
            scaler.update()

        return run_amp
    raise KeyError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")


def fastopt_pipeline(pipeline: str, optim: str, params: Params) -> Callable[[], None]:
    """``OptimWrapper`` / ``AmpOptimWrapper`` with clipping around the fused optimizer."""
    from fastopt.wrapper import AmpOptimWrapper, OptimWrapper

    opt = _optimizer(optim, True, params)
    clip_grad = dict(max_norm=MAX_NORM)
    if pipeline == "clip":
        return OptimWrapper(opt, clip_grad=clip_grad).step
    if pipeline == "amp":
        wrapper = AmpOptimWrapper(
            loss_scale=dict(LOSS_SCALE), dtype="float16", optimizer=opt, clip_grad=clip_grad
        )
        wrapper.backward(_zero_loss(params))  # what a training step does first
        return wrapper.step
    raise KeyError(f"unknown pipeline {pipeline!r}; known: {', '.join(PIPELINES)}")


def build_pipeline(pipeline: str, impl: str, optim: str, params: Params) -> Callable[[], None]:
    """The ``impl`` side (``'fastopt'`` or ``'torch'``) of ``pipeline``."""
    if impl == "fastopt":
        return fastopt_pipeline(pipeline, optim, params)
    if impl == "torch":
        return torch_pipeline(pipeline, optim, params)
    raise KeyError(f"unknown pipeline implementation {impl!r}; known: {PIPELINE_IMPLS}")


def pipeline_dtypes(pipeline: str, dtypes: Sequence[str]) -> list[str]:
    """AMP keeps float32 params (its grads are float32 too): only ``fp32`` applies."""
    return [d for d in dtypes if pipeline != "amp" or d == "fp32"]


def run_pipeline_benchmarks(
    sets: Sequence[str] = DEFAULT_SETS,
    optims: Sequence[str] = ("adamw",),
    dtypes: Sequence[str] = ("fp32",),
    pipelines: Sequence[str] = PIPELINES,
    *,
    device: str = "cpu",
    repeat: int = 20,
    warmup: int = 2,
    scale: float = 1.0,
    seed: int = 0,
    min_sample_s: float = 5e-3,
    progress: Progress | None = None,
) -> list[Comparison]:
    """One :class:`~fastopt.benchmark.step.Comparison` per (set, pipeline, optimizer, dtype)."""
    results = []
    for set_name in sets:
        pset = get_set(set_name)
        for dtype in dtypes:
            params: Params | None = None
            for pipeline in pipelines:
                if dtype not in pipeline_dtypes(pipeline, [dtype]):
                    continue
                for optim in optims:
                    if not get_optim(optim).has_fused_peer:
                        continue  # no torch fused counterpart
                    if params is None:
                        params = make_params(pset, dtype, device, scale, seed)
                    candidates: dict[str, Callable[[], Any]] = {}
                    errors: dict[str, str] = {}
                    for impl in PIPELINE_IMPLS:
                        try:
                            candidates[impl] = build_pipeline(pipeline, impl, optim, params)
                        except Exception as e:
                            errors[impl] = f"{type(e).__name__}: {e}"
                    if progress:
                        progress(f"pipe  {set_name:<19} {pipeline:<6} {optim:<6} {dtype:<5}")
                    results.append(
                        compare(
                            "pipeline",
                            {
                                "set": set_name,
                                "pipeline": pipeline,
                                "optim": optim,
                                "dtype": dtype,
                                "device": device,
                            },
                            candidates,
                            params_step_bytes(optim, params, extra_grad_reads=1),
                            device=device,
                            repeat=repeat,
                            warmup=warmup,
                            min_sample_s=min_sample_s,
                            info={
                                "tensors": params.n_tensors,
                                "params": params.numel,
                                "groups": params.n_groups(),
                                "scale": scale,
                            },
                            errors=errors,
                        )
                    )
                    del candidates
                    release_memory(params)
    return results
