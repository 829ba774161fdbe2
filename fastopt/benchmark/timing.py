"""Interleaved timing, the memory-bandwidth reference and the bytes an optimizer step moves.

Candidates are timed round-robin (A B C, B C A, C A B, ...) so that machine noise, frequency
changes and other processes hit all of them alike; a ratio of two medians from the same run
is what a speed claim rests on. Each sample times ``inner`` consecutive calls, with ``inner``
chosen during warm-up so that a sample lasts at least ``min_sample_s``.

The bandwidth reference is an in-place ``a.add_(b)`` over float32 tensors on the CPU (read a,
read b, write a) and a device-to-device ``dst.copy_(src)`` on CUDA, sized to move the same
number of bytes as the optimizer step it is compared with.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: name of the bandwidth reference among the timed candidates
REFERENCE = "reference"

#: a call that moves fewer bytes is bound by per-call and per-tensor overhead and runs from the
#: caches (64 MiB is above the last-level cache of one CPU die and a GPU's L2), so its bandwidth
#: and its fraction of the reference's mean nothing
MIN_BANDWIDTH_BYTES = 64 << 20


@dataclass
class Stats:
    """Seconds per call of one candidate: one entry per sample."""

    samples: list[float] = field(default_factory=list)
    inner: int = 1

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def quantile(self, q: float) -> float:
        """Linear-interpolated quantile ``q`` in [0, 1] of the samples."""
        xs = sorted(self.samples)
        if len(xs) == 1:
            return xs[0]
        pos = q * (len(xs) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    @property
    def iqr(self) -> float:
        return self.quantile(0.75) - self.quantile(0.25)

    def to_dict(self) -> dict[str, Any]:
        """Milliseconds, rounded for JSON."""
        ms = 1e3
        return {
            "median_ms": self.median * ms,
            "q1_ms": self.quantile(0.25) * ms,
            "q3_ms": self.quantile(0.75) * ms,
            "iqr_ms": self.iqr * ms,
            "min_ms": min(self.samples) * ms,
            "samples": len(self.samples),
            "calls_per_sample": self.inner,
        }


def synchronizer(device: str) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA device, None for the CPU."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    dev = torch.device(device)
    return lambda: torch.cuda.synchronize(dev)


def _timed(fn: Callable[[], Any], calls: int, sync: Callable[[], None] | None) -> float:
    if sync is not None:
        sync()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    if sync is not None:
        sync()
    return (time.perf_counter() - t0) / calls


def time_interleaved(
    candidates: Mapping[str, Callable[[], Any]],
    *,
    repeat: int = 20,
    warmup: int = 2,
    min_sample_s: float = 5e-3,
    max_inner: int = 1000,
    sync: Callable[[], None] | None = None,
) -> tuple[dict[str, Stats], dict[str, str]]:
    """Time the candidates round-robin; returns (stats per name, error per failed name).

    A candidate that raises during warm-up is dropped and its error reported; the others are
    still timed. ``repeat`` rounds follow ``warmup`` rounds; round ``r`` starts at candidate
    ``r mod n`` so that no candidate always runs right after the same other one.
    """
    if repeat < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat}")
    live = dict(candidates)
    errors: dict[str, str] = {}
    estimate: dict[str, float] = {}
    for _ in range(max(1, warmup)):
        for name in list(live):
            try:
                estimate[name] = _timed(live[name], 1, sync)
            except Exception as e:  # a broken candidate must not stop the others
                errors[name] = f"{type(e).__name__}: {e}"
                del live[name]
    stats = {
        name: Stats(inner=max(1, min(max_inner, math.ceil(min_sample_s / max(t, 1e-9)))))
        for name, t in estimate.items()
        if name in live
    }
    names = list(stats)
    for r in range(repeat):
        k = r % len(names) if names else 0
        for name in names[k:] + names[:k]:
            s = stats[name]
            s.samples.append(_timed(live[name], s.inner, sync))
    return stats, errors


def stream_reference(nbytes: int, device: str = "cpu") -> tuple[Callable[[], Any], int, str]:
    """A streaming kernel moving about ``nbytes``: (callable, exact bytes moved, label).

    CPU: in-place ``a.add_(b)`` on float32 (12 bytes per element); CUDA: ``dst.copy_(src)``
    (8 bytes per element).
    """
    import torch

    gen = torch.Generator().manual_seed(1)
    if str(device).startswith("cuda"):
        n = max(1, math.ceil(nbytes / 8))
        src = torch.randn(n, generator=gen).to(device)
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), 8 * n, "copy_"
    n = max(1, math.ceil(nbytes / 12))
    a = torch.randn(n, generator=gen)
    b = torch.randn(n, generator=gen)
    return (lambda: a.add_(b)), 12 * n, "add_"


def step_bytes(
    optim: str,
    numel: int,
    param_size: int,
    state_size: int,
    *,
    grad_size: int | None = None,
    extra_grad_reads: int = 0,
) -> int:
    """Bytes a step of ``optim`` must move for ``numel`` elements (its minimal traffic).

    ``extra_grad_reads`` adds passes over the grads (1 for a norm reduction before clipping).
    """
    from fastopt.benchmark.candidates import get_optim

    p, g, s = get_optim(optim).traffic
    gsize = param_size if grad_size is None else grad_size
    return numel * (p * param_size + (g + extra_grad_reads) * gsize + s * state_size)


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages of the machine (None where the OS has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def load_1m() -> float | None:
    """The 1-minute load average when a measurement ends: how busy the machine was."""
    load = load_average()
    return None if load is None else load[0]


def machine_loaded(load_1m: float | None, cpus: int | None) -> bool:
    """More runnable threads than CPUs over the last minute, the benchmark's own included.

    Timings are then unreliable: torch's many short parallel regions wait for threads that
    another process holds, so torch's time grows far more than fastopt's single region and
    speed-ups come out inflated (hundreds of × instead of a few).
    """
    return load_1m is not None and bool(cpus) and load_1m > cpus
