"""The optimizer-step benchmark: fastopt against torch.optim, interleaved, with a bandwidth
reference of the same byte count measured in the same run."""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastopt.benchmark.candidates import IMPLS, get_optim
from fastopt.benchmark.param_sets import Params, get_set, make_params
from fastopt.benchmark.timing import (
    MIN_BANDWIDTH_BYTES,
    REFERENCE,
    Stats,
    load_1m,
    step_bytes,
    stream_reference,
    synchronizer,
    time_interleaved,
)

Progress = Callable[[str], None]


@dataclass
class Comparison:
    """Timings of several implementations of one workload, from one interleaved run.

    ``stats`` holds every implementation that ran plus the bandwidth reference under
    :data:`~fastopt.benchmark.timing.REFERENCE`; ``bytes`` is what one call of the workload
    must move, ``reference_bytes`` what one call of the reference moves.
    """

    kind: str
    key: dict[str, Any]
    stats: dict[str, Stats]
    bytes: int
    reference_bytes: int
    reference_label: str
    info: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    subject: str = "fastopt"

    def median(self, impl: str) -> float | None:
        s = self.stats.get(impl)
        return None if s is None else s.median

    def speedup(self, impl: str) -> float | None:
        """``time(impl) / time(fastopt)``: above 1 means fastopt is faster."""
        mine, theirs = self.median(self.subject), self.median(impl)
        if mine is None or theirs is None or mine <= 0:
            return None
        return theirs / mine

    def gbps(self, impl: str | None = None) -> float | None:
        t = self.median(impl or self.subject)
        return None if not t else self.bytes / t / 1e9

    def reference_gbps(self) -> float | None:
        t = self.median(REFERENCE)
        return None if not t else self.reference_bytes / t / 1e9

    @property
    def bandwidth_meaningful(self) -> bool:
        """The call moves enough bytes for its bandwidth to be memory bandwidth."""
        return self.bytes >= MIN_BANDWIDTH_BYTES

    def fraction_of_reference(self, impl: str | None = None) -> float | None:
        """Achieved bandwidth of ``impl`` as a fraction of the reference's."""
        mine, ref = self.gbps(impl), self.reference_gbps()
        return None if mine is None or not ref else mine / ref

    def to_dict(self) -> dict[str, Any]:
        impls = [k for k in self.stats if k not in (self.subject, REFERENCE)]
        return {
            **self.key,
            **self.info,
            "bytes": self.bytes,
            "gbps": self.gbps(),
            "reference": {
                "kind": self.reference_label,
                "bytes": self.reference_bytes,
                "gbps": self.reference_gbps(),
                **(self.stats[REFERENCE].to_dict() if REFERENCE in self.stats else {}),
            },
            "fraction_of_reference": self.fraction_of_reference(),
            "bandwidth_meaningful": self.bandwidth_meaningful,
            "impls": {k: v.to_dict() for k, v in self.stats.items() if k != REFERENCE},
            "speedup": {k: self.speedup(k) for k in impls},
            "errors": dict(self.errors),
        }


def params_step_bytes(optim: str, params: Params, extra_grad_reads: int = 0) -> int:
    """Bytes one step of ``optim`` moves over ``params`` (see :func:`step_bytes`)."""
    p = params.tensors[0]
    psize = p.element_size()
    ssize = psize if params.states_in_param_dtype else 4
    return step_bytes(optim, params.numel, psize, ssize, extra_grad_reads=extra_grad_reads)


def compare(
    kind: str,
    key: dict[str, Any],
    candidates: dict[str, Callable[[], Any]],
    nbytes: int,
    *,
    device: str,
    repeat: int,
    warmup: int,
    min_sample_s: float = 5e-3,
    info: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
) -> Comparison:
    """Time ``candidates`` and a same-bytes bandwidth reference interleaved."""
    ref_fn, ref_bytes, ref_label = stream_reference(nbytes, device)
    stats, errs = time_interleaved(
        {**candidates, REFERENCE: ref_fn},
        repeat=repeat,
        warmup=warmup,
        min_sample_s=min_sample_s,
        sync=synchronizer(device),
    )
    return Comparison(
        kind=kind,
        key=key,
        stats=stats,
        bytes=nbytes,
        reference_bytes=ref_bytes,
        reference_label=ref_label,
        info={**(info or {}), "load_average_1m": load_1m()},
        errors={**(errors or {}), **errs},
    )


def run_step_benchmarks(
    sets: Sequence[str],
    optims: Sequence[str],
    dtypes: Sequence[str],
    *,
    device: str = "cpu",
    impls: Sequence[str] = IMPLS,
    repeat: int = 20,
    warmup: int = 2,
    scale: float = 1.0,
    seed: int = 0,
    min_sample_s: float = 5e-3,
    progress: Progress | None = None,
) -> list[Comparison]:
    """One :class:`Comparison` per (set, optimizer, dtype): fastopt against each torch impl.

    Each timed sample repeats a call until it lasts ``min_sample_s``; see
    :func:`~fastopt.benchmark.timing.time_interleaved`.
    """
    results = []
    for set_name in sets:
        pset = get_set(set_name)
        for dtype in dtypes:
            params = make_params(pset, dtype, device, scale, seed)
            for optim in optims:
                spec = get_optim(optim)
                wanted = ["fastopt", *(i for i in impls if i != "fastopt")]
                candidates: dict[str, Callable[[], Any]] = {}
                errors: dict[str, str] = {}
                for impl in wanted:
                    if impl not in spec.impls():
                        continue
                    try:
                        candidates[impl] = build_optimizer_step(spec.name, impl, params)
                    except Exception as e:  # e.g. no CUDA engine built: still time torch
                        errors[impl] = f"{type(e).__name__}: {e}"
                if progress:
                    progress(
                        f"step  {set_name:<19} {optim:<6} {dtype:<5} ({len(candidates)} impls)"
                    )
                key = {"set": set_name, "optim": optim, "dtype": dtype, "device": device}
                info = {
                    "tensors": params.n_tensors,
                    "params": params.numel,
                    "groups": params.n_groups(),
                    "scale": scale,
                }
                results.append(
                    compare(
                        "step",
                        key,
                        candidates,
                        params_step_bytes(optim, params),
                        device=device,
                        repeat=repeat,
                        warmup=warmup,
                        min_sample_s=min_sample_s,
                        info=info,
                        errors=errors,
                    )
                )
                del candidates
                release_memory(params)
            del params
    return results


def release_memory(params: Params) -> None:
    """Free dropped optimizers' states now when they are big (a full gc costs ~0.1 s)."""
    if params.param_bytes > 64 << 20:
        gc.collect()


def build_optimizer_step(optim: str, impl: str, params: Params) -> Callable[[], Any]:
    """``optimizer.step`` of a fresh optimizer (its states appear at the first call)."""
    from fastopt.benchmark.candidates import build_optimizer

    return build_optimizer(optim, impl, params).step
