"""Training-loop benchmark: forward + backward + step of small models, fastopt against torch.

The optimizer step alone does not tell the whole story on a CPU: torch's wheel runs its
forward/backward on its own OpenMP pool, and a second pool in the same process (fastopt's
engine) can spin against it. So this times whole iterations of a small CNN and a small
transformer, the same model, data and seed for every candidate, and also reports the
forward+backward and step parts separately: forward+backward with fastopt must be as fast as
with torch's own fused optimizer.

Candidates run round-robin in blocks of ``block`` iterations; the first iteration of each
block is not recorded, so that what a candidate leaves behind (spinning threads, cold caches)
is charged to itself in steady state and not to the next candidate.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastopt.benchmark.candidates import OPTIMS, get_optim
from fastopt.benchmark.timing import Stats, load_1m, synchronizer

if TYPE_CHECKING:
    import torch
    from torch import nn

#: implementations compared in the loop: torch's fused one is the baseline that matters
LOOP_IMPLS: tuple[str, ...] = ("fastopt", "fused", "foreach")
MODELS: tuple[str, ...] = ("cnn", "transformer")
#: optimizers with a torch fused counterpart (the loop compares against it)
LOOP_OPTIMS: tuple[str, ...] = tuple(n for n, s in OPTIMS.items() if s.has_fused_peer)


def build_model(name: str, seed: int = 0) -> nn.Module:
    """A small CNN (CIFAR-sized) or a small transformer language model, seeded."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    if name == "cnn":

        def block(cin: int, cout: int, stride: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]

        return nn.Sequential(
            *block(3, 32, 1),
            *block(32, 64, 2),
            *block(64, 64, 1),
            *block(64, 128, 2),
            *block(128, 128, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, 10),
        )
    if name == "transformer":
        return _tiny_lm_cls()(vocab=2048, d=128, heads=4, layers=2, ctx=64)
    raise KeyError(f"unknown model {name!r}; known: {', '.join(MODELS)}")


def _tiny_lm_cls() -> type:
    from torch import nn

    class TinyLM(nn.Module):
        """Token + position embeddings, a pre-norm transformer encoder (causal), an LM head."""

        def __init__(self, vocab: int, d: int, heads: int, layers: int, ctx: int) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(ctx, d)
            layer = nn.TransformerEncoderLayer(
                d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True
            )
            self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
            self.norm = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            import torch

            n = x.shape[1]
            mask = nn.Transformer.generate_square_subsequent_mask(n, device=x.device)
            h = self.tok(x) + self.pos(torch.arange(n, device=x.device))
            return self.head(self.norm(self.body(h, mask=mask, is_causal=True)))

    return TinyLM


def make_batch(
    model: str, batch: int, device: str, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed (input, target) batch for ``model``."""
    import torch

    gen = torch.Generator().manual_seed(seed + 1)
    if model == "cnn":
        x = torch.randn(batch, 3, 32, 32, generator=gen)
        y = torch.randint(0, 10, (batch,), generator=gen)
    else:
        tokens = torch.randint(0, 2048, (batch, 65), generator=gen)
        x, y = tokens[:, :-1], tokens[:, 1:]
    return x.to(device), y.to(device)


def batch_size(model: str, scale: float = 1.0) -> int:
    """32 images or 16 sequences of 64 tokens at full scale; shrunk (at least 2) by ``scale``."""
    full = 32 if model == "cnn" else 16
    return max(2, round(full * min(1.0, scale)))


def _build_loop_optimizer(optim: str, impl: str, model: nn.Module) -> torch.optim.Optimizer:

    import fastopt.optim

    spec = get_optim(optim)
    params = list(model.parameters())
    if impl == "fastopt":
        return getattr(fastopt.optim, spec.fused_cls)(params, **spec.kwargs)
    return spec.peers[impl].build(params, **spec.kwargs)


class TrainStep:
    """One training iteration of a model copy with its own optimizer; times its parts."""

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[Any, Any], kind: str
    ) -> None:
        self.model, self.optimizer, self.batch, self.kind = model, optimizer, batch, kind

    def loss(self) -> torch.Tensor:
        from torch.nn import functional as F

        x, y = self.batch
        out = self.model(x)
        if self.kind == "transformer":
            return F.cross_entropy(out.flatten(0, 1), y.flatten())
        return F.cross_entropy(out, y)

    def __call__(self, sync: Callable[[], None] | None = None) -> tuple[float, float]:
        """Run one iteration; returns (forward+backward seconds, step seconds)."""
        self.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        self.loss().backward()
        if sync is not None:
            sync()
        t1 = time.perf_counter()
        self.optimizer.step()
        if sync is not None:
            sync()
        return t1 - t0, time.perf_counter() - t1


def make_train_step(
    model_name: str,
    optim: str,
    impl: str,
    *,
    device: str = "cpu",
    scale: float = 1.0,
    seed: int = 0,
    base: nn.Module | None = None,
) -> TrainStep:
    """A :class:`TrainStep` on a copy of ``base`` (or of a freshly seeded model)."""
    model = copy.deepcopy(base) if base is not None else build_model(model_name, seed)
    model = model.to(device).train()
    batch = make_batch(model_name, batch_size(model_name, scale), device, seed)
    return TrainStep(model, _build_loop_optimizer(optim, impl, model), batch, model_name)


@dataclass
class LoopResult:
    """Per-iteration timings of each implementation for one (model, optimizer)."""

    key: dict[str, Any]
    total: dict[str, Stats]
    fwd_bwd: dict[str, Stats]
    step: dict[str, Stats]
    info: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    subject: str = "fastopt"

    def speedup(self, impl: str) -> float | None:
        """``iteration time(impl) / iteration time(fastopt)``."""
        mine, theirs = self.total.get(self.subject), self.total.get(impl)
        if mine is None or theirs is None:
            return None
        return theirs.median / mine.median

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.key,
            **self.info,
            "impls": {
                k: {
                    **v.to_dict(),
                    "fwd_bwd_median_ms": self.fwd_bwd[k].median * 1e3,
                    "step_median_ms": self.step[k].median * 1e3,
                }
                for k, v in self.total.items()
            },
            "speedup": {k: self.speedup(k) for k in self.total if k != self.subject},
            "errors": dict(self.errors),
        }


def run_train_loop_benchmarks(
    models: Sequence[str] = MODELS,
    optims: Sequence[str] = ("sgd", "adamw"),
    *,
    device: str = "cpu",
    impls: Sequence[str] = LOOP_IMPLS,
    repeat: int = 20,
    warmup: int = 2,
    block: int = 3,
    scale: float = 1.0,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> list[LoopResult]:
    """Interleaved training iterations, one :class:`LoopResult` per (model, optimizer)."""
    sync = synchronizer(device)
    results = []
    for model_name in models:
        base = build_model(model_name, seed)
        n_params = sum(p.numel() for p in base.parameters())
        for optim in optims:
            if optim not in LOOP_OPTIMS:
                continue
            steps: dict[str, TrainStep] = {}
            errors: dict[str, str] = {}
            for impl in ["fastopt", *(i for i in impls if i != "fastopt")]:
                try:
                    s = make_train_step(
                        model_name, optim, impl, device=device, scale=scale, seed=seed, base=base
                    )
                    for _ in range(max(1, warmup)):
                        s(sync)
                    steps[impl] = s
                except Exception as e:  # report and time the others
                    errors[impl] = f"{type(e).__name__}: {e}"
            if progress:
                progress(f"loop  {model_name:<19} {optim:<6} ({len(steps)} impls)")
            total = {k: Stats() for k in steps}
            fwd_bwd = {k: Stats() for k in steps}
            step = {k: Stats() for k in steps}
            names = list(steps)
            for r in range(repeat):
                k0 = r % len(names) if names else 0
                for name in names[k0:] + names[:k0]:
                    for i in range(block + 1):
                        fb, st = steps[name](sync)
                        if i:  # the first iteration of a block only settles
                            fwd_bwd[name].samples.append(fb)
                            step[name].samples.append(st)
                            total[name].samples.append(fb + st)
            results.append(
                LoopResult(
                    key={"model": model_name, "optim": optim, "device": device},
                    total=total,
                    fwd_bwd=fwd_bwd,
                    step=step,
                    info={
                        "params": n_params,
                        "tensors": len(list(base.parameters())),
                        "batch": batch_size(model_name, scale),
                        "load_average_1m": load_1m(),
                    },
                    errors=errors,
                )
            )
    return results
