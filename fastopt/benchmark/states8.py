"""8-bit optimizer states against float32 states: bytes of state per param and step time.

``fastopt bench --states8``: fastopt's FusedAdamW with ``state_dtype='8bit'`` and with float32
states, and bitsandbytes' AdamW8bit where it is installed and runs on the device, on the same
params (a parameter set, by default GPT-2 small), timed round-robin in one process. Bytes of
state per param count every tensor of ``optimizer.state`` (codes, absmax, float32 states of
small tensors, step counts; a map shared by many params once) over the params' elements.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from fastopt.benchmark.param_sets import make_params
from fastopt.benchmark.timing import synchronizer, time_interleaved

#: the issue's targets (8-bit against float32-state AdamW, same params)
TARGET_BYTES_PER_PARAM = 2.1
TARGET_TIME_RATIO = 1.0


@dataclass
class StatesResult:
    set_name: str
    numel: int
    bytes_per_param: dict[str, float] = field(default_factory=dict)
    median_ms: dict[str, float] = field(default_factory=dict)
    iqr_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def ratio(self, name: str) -> float | None:
        base = self.median_ms.get("fastopt fp32 states")
        t = self.median_ms.get(name)
        return None if base is None or t is None else t / base

    def to_dict(self) -> dict[str, Any]:
        return {
            "set": self.set_name,
            "numel": self.numel,
            "bytes_per_param": self.bytes_per_param,
            "median_ms": self.median_ms,
            "iqr_ms": self.iqr_ms,
            "time_vs_fp32_states": {k: self.ratio(k) for k in self.median_ms},
            "errors": self.errors,
        }


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Bytes of every tensor in the optimizer's state (each storage once)."""
    seen: set[int] = set()
    total = 0
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                key = v.untyped_storage().data_ptr()
                if key not in seen:
                    seen.add(key)
                    total += v.untyped_storage().nbytes()
    return total


def bitsandbytes_adamw8bit(device: str) -> tuple[type | None, str | None]:
    """bitsandbytes' AdamW8bit, or why it cannot run here."""
    if importlib.util.find_spec("bitsandbytes") is None:
        return None, "bitsandbytes is not installed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import bitsandbytes as bnb
        p = torch.nn.Parameter(torch.randn(64, 64, device=device))
        p.grad = torch.randn_like(p)
        bnb.optim.AdamW8bit([p]).step()
    except Exception as e:  # any failure of its backend here is the reason
        return None, f"bitsandbytes' AdamW8bit does not run on {device}: {e}"
    return bnb.optim.AdamW8bit, None


def candidates(device: str) -> dict[str, Callable[[Any], torch.optim.Optimizer]]:
    import fastopt

    out: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
        "fastopt fp32 states": lambda p: fastopt.FusedAdamW(p, lr=1e-4),
        "fastopt 8bit": lambda p: fastopt.FusedAdamW(p, lr=1e-4, state_dtype="8bit"),
    }
    bnb, _ = bitsandbytes_adamw8bit(device)
    if bnb is not None:
        out["bitsandbytes AdamW8bit"] = lambda p: bnb(p, lr=1e-4)
    return out


def run_states8(
    sets: list[str],
    *,
    device: str = "cpu",
    repeat: int = 20,
    warmup: int = 2,
    scale: float = 1.0,
    seed: int = 0,
    min_sample_s: float = 5e-3,
    progress: Callable[[str], None] = lambda s: None,
) -> list[StatesResult]:
    results = []
    for set_name in sets:
        progress(f"8-bit states: {set_name}")
        res = StatesResult(set_name, 0)
        _, why = bitsandbytes_adamw8bit(device)
        if why:
            res.errors["bitsandbytes AdamW8bit"] = why
        steps = {}
        for name, make in candidates(device).items():
            params = make_params(set_name, "fp32", device, scale, seed)
            res.numel = params.numel
            try:
                opt = make(params.tensors)
                opt.step()
            except Exception as e:  # reported, the others still run
                res.errors[name] = f"{type(e).__name__}: {e}"
                continue
            res.bytes_per_param[name] = state_bytes(opt) / params.numel
            steps[name] = opt.step
        stats, errors = time_interleaved(
            steps,
            repeat=repeat,
            warmup=warmup,
            min_sample_s=min_sample_s,
            sync=synchronizer(device),
        )
        res.errors.update(errors)
        for name, s in stats.items():
            res.median_ms[name] = s.median * 1e3
            res.iqr_ms[name] = s.iqr * 1e3
        results.append(res)
    return results


def table(results: list[StatesResult]) -> str:
    lines = [
        "| set | optimizer | state bytes / param | step ms (median, IQR) | time vs fp32 states |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        for name in r.bytes_per_param:
            ms = r.median_ms.get(name)
            ratio = r.ratio(name)
            lines.append(
                f"| {r.set_name} ({r.numel / 1e6:.1f}M) | {name} | {r.bytes_per_param[name]:.3f} "
                f"| {'-' if ms is None else f'{ms:.1f} ({r.iqr_ms[name]:.1f})'} "
                f"| {'-' if ratio is None else f'{ratio:.2f}x'} |"
            )
        for name, why in r.errors.items():
            lines.append(f"| {r.set_name} | {name} | - | - | {why} |")
        b8 = r.bytes_per_param.get("fastopt 8bit")
        t8 = r.ratio("fastopt 8bit")
        if b8 is not None and t8 is not None:
            lines.append("")
            lines.append(
                f"targets ({r.set_name}): <= {TARGET_BYTES_PER_PARAM} bytes/param: {b8:.3f} "
                f"({'met' if b8 <= TARGET_BYTES_PER_PARAM else 'not met'}); step time <= "
                f"{TARGET_TIME_RATIO:.1f}x fp32 states: {t8:.2f}x "
                f"({'met' if t8 <= TARGET_TIME_RATIO else 'not met'})"
            )
    return "\n".join(lines)
