"""Parameter sets of the benchmarks: shapes written out in code, tensors made on demand.

Each set is a list of ``(name, shape)`` pairs. :func:`make_params` turns a set into leaf
tensors with random, never-zero gradients from a seeded generator, so every run and every
candidate steps the same numbers. ``scale`` shrinks every tensor (not the tensor count, which
is what the host overhead depends on) for smoke tests.

The sets:

* ``resnet50``: torchvision's ``resnet50()`` (161 tensors, 25,557,032 params), one param group.
* ``resnet50-paramwise``: the same tensors with one param group per parameter, as MMEngine's
  paramwise constructor builds them (biases and norm weights get ``weight_decay=0``, and
  ``lars_exclude=True`` for LARS, as mmpretrain's SimCLR/BYOL configs set).
* ``gpt2``: GPT-2 small as Hugging Face names it (148 tensors, 124,439,808 params; the LM head
  is tied to ``wte``).
* ``mixed2000``: 2000 tensors of log-uniform sizes in [64, 65536] (seeded).
* ``tiny2000``: 2000 tensors of 16 elements.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]

#: the benchmark dtypes: name -> (param/grad dtype name, states in the param dtype?)
DTYPES: dict[str, tuple[str, bool]] = {
    "fp32": ("float32", False),
    "bf16": ("bfloat16", True),  # bf16 params and grads, bf16 optimizer states
    "fp16": ("float16", True),  # fp16 params, grads and states
    # bf16 params and grads, float32 states (fastopt's default; torch keeps bf16 states)
    "bf16-fp32states": ("bfloat16", False),
}
#: what ``fastopt bench`` measures unless ``--dtype`` says
DEFAULT_DTYPES = ("fp32", "bf16")


@dataclass(frozen=True)
class ParamSet:
    """A named list of parameter shapes and how they are grouped."""

    name: str
    description: str
    shapes: tuple[tuple[str, Shape], ...]
    #: one param group per parameter (MMEngine paramwise style) instead of a single group
    per_param_groups: bool = False

    @property
    def n_tensors(self) -> int:
        return len(self.shapes)

    @cached_property
    def numel(self) -> int:
        return sum(math.prod(shape) for _, shape in self.shapes)

    def scaled_shapes(self, scale: float = 1.0) -> list[tuple[str, Shape]]:
        """The shapes at ``scale``: unchanged at 1, else 1-D with ``max(1, round(numel*scale))``."""
        if scale == 1.0:
            return list(self.shapes)
        if not scale > 0:
            raise ValueError(f"scale must be positive, got {scale}")
        return [(n, (max(1, round(math.prod(s) * scale)),)) for n, s in self.shapes]

    def scaled_numel(self, scale: float = 1.0) -> int:
        return sum(math.prod(s) for _, s in self.scaled_shapes(scale))


def _resnet50_shapes() -> tuple[tuple[str, Shape], ...]:
    """torchvision ``resnet50()`` parameters, in ``named_parameters()`` order."""
    shapes: list[tuple[str, Shape]] = [
        ("conv1.weight", (64, 3, 7, 7)),
        ("bn1.weight", (64,)),
        ("bn1.bias", (64,)),
    ]
    inplanes = 64
    # (planes, blocks) of layer1..layer4; Bottleneck expansion 4
    for layer, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            pre = f"layer{layer}.{b}"
            width, out = planes, planes * 4
            shapes += [
                (f"{pre}.conv1.weight", (width, inplanes, 1, 1)),
                (f"{pre}.bn1.weight", (width,)),
                (f"{pre}.bn1.bias", (width,)),
                (f"{pre}.conv2.weight", (width, width, 3, 3)),
                (f"{pre}.bn2.weight", (width,)),
                (f"{pre}.bn2.bias", (width,)),
                (f"{pre}.conv3.weight", (out, width, 1, 1)),
                (f"{pre}.bn3.weight", (out,)),
                (f"{pre}.bn3.bias", (out,)),
            ]
            if b == 0:  # stride or width change: projection shortcut
                shapes += [
                    (f"{pre}.downsample.0.weight", (out, inplanes, 1, 1)),
                    (f"{pre}.downsample.1.weight", (out,)),
                    (f"{pre}.downsample.1.bias", (out,)),
                ]
            inplanes = out
    shapes += [("fc.weight", (1000, 2048)), ("fc.bias", (1000,))]
    return tuple(shapes)


def _gpt2_small_shapes() -> tuple[tuple[str, Shape], ...]:
    """Hugging Face ``GPT2Model`` (gpt2, 124M) parameters; Conv1D weights are (in, out)."""
    d, vocab, ctx, layers = 768, 50257, 1024, 12
    shapes: list[tuple[str, Shape]] = [("wte.weight", (vocab, d)), ("wpe.weight", (ctx, d))]
    for i in range(layers):
        pre = f"h.{i}"
        shapes += [
            (f"{pre}.ln_1.weight", (d,)),
            (f"{pre}.ln_1.bias", (d,)),
            (f"{pre}.attn.c_attn.weight", (d, 3 * d)),
            (f"{pre}.attn.c_attn.bias", (3 * d,)),
            (f"{pre}.attn.c_proj.weight", (d, d)),
            (f"{pre}.attn.c_proj.bias", (d,)),
            (f"{pre}.ln_2.weight", (d,)),
            (f"{pre}.ln_2.bias", (d,)),
            (f"{pre}.mlp.c_fc.weight", (d, 4 * d)),
            (f"{pre}.mlp.c_fc.bias", (4 * d,)),
            (f"{pre}.mlp.c_proj.weight", (4 * d, d)),
            (f"{pre}.mlp.c_proj.bias", (d,)),
        ]
    shapes += [("ln_f.weight", (d,)), ("ln_f.bias", (d,))]
    return tuple(shapes)


def _log_uniform_shapes(
    count: int, low: int, high: int, seed: int = 2024
) -> tuple[tuple[str, Shape], ...]:
    rng = random.Random(seed)
    lo, hi = math.log(low), math.log(high)
    sizes = [min(high, max(low, round(math.exp(rng.uniform(lo, hi))))) for _ in range(count)]
    return tuple((f"p{i}", (n,)) for i, n in enumerate(sizes))


_RESNET50 = _resnet50_shapes()

SETS: dict[str, ParamSet] = {
    s.name: s
    for s in (
        ParamSet("resnet50", "ResNet-50, one group", _RESNET50),
        ParamSet(
            "resnet50-paramwise",
            "ResNet-50, one group per param",
            _RESNET50,
            per_param_groups=True,
        ),
        ParamSet("gpt2", "GPT-2 small", _gpt2_small_shapes()),
        ParamSet("mixed2000", "2000 tensors, 64..65536", _log_uniform_shapes(2000, 64, 65536)),
        ParamSet("tiny2000", "2000 tensors of 16", tuple((f"p{i}", (16,)) for i in range(2000))),
    )
}


def get_set(name: str) -> ParamSet:
    """The set called ``name`` (a KeyError lists the names)."""
    try:
        return SETS[name]
    except KeyError:
        raise KeyError(f"unknown parameter set {name!r}; known: {', '.join(SETS)}") from None


def _no_decay(name: str) -> bool:
    """Biases and norm-layer weights: MMEngine's bias_decay_mult / norm_decay_mult = 0."""
    *path, leaf = name.split(".")
    is_norm = any(p.startswith(("bn", "ln")) for p in path) or ".downsample.1." in f".{name}"
    return leaf == "bias" or is_norm


@dataclass
class Params:
    """The tensors of a set: leaf params with ``.grad`` set."""

    pset: ParamSet
    names: list[str]
    tensors: list[torch.Tensor]
    dtype: str
    device: str

    @property
    def numel(self) -> int:
        return sum(t.numel() for t in self.tensors)

    @property
    def param_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors)

    @property
    def states_in_param_dtype(self) -> bool:
        return DTYPES[self.dtype][1]

    def param_groups(self, extra: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Fresh group dicts for a new optimizer (optimizers fill in and keep their groups).

        Paramwise sets give one group per param with ``weight_decay=0`` for biases and norm
        weights, plus ``extra`` (e.g. ``lars_exclude=True``) on those.
        """
        if not self.pset.per_param_groups:
            return [{"params": list(self.tensors)}]
        groups = []
        for name, t in zip(self.names, self.tensors):
            group: dict[str, Any] = {"params": [t]}
            if _no_decay(name):
                group["weight_decay"] = 0.0
                group.update(extra or {})
            groups.append(group)
        return groups

    def n_groups(self) -> int:
        return self.n_tensors if self.pset.per_param_groups else 1

    @property
    def n_tensors(self) -> int:
        return len(self.tensors)


def make_params(
    pset: ParamSet | str,
    dtype: str = "fp32",
    device: str = "cpu",
    scale: float = 1.0,
    seed: int = 0,
) -> Params:
    """Leaf tensors of ``pset`` with random values and random non-zero grads (seeded).

    Values are drawn in float32 on the CPU with one generator (so every device and dtype starts
    from the same numbers), then cast and moved.
    """
    import torch

    if isinstance(pset, str):
        pset = get_set(pset)
    if dtype not in DTYPES:
        raise KeyError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPES)}")
    torch_dtype = getattr(torch, DTYPES[dtype][0])
    gen = torch.Generator().manual_seed(seed)
    names, tensors = [], []
    for name, shape in pset.scaled_shapes(scale):
        p = torch.randn(shape, generator=gen).mul_(0.02)
        g = torch.randn(shape, generator=gen).mul_(0.01)
        p = p.to(device=device, dtype=torch_dtype)
        g = g.to(device=device, dtype=torch_dtype)
        g.masked_fill_(g == 0, 1e-3)  # never a zero gradient
        p.requires_grad_(True)
        p.grad = g
        names.append(name)
        tensors.append(p)
    return Params(pset, names, tensors, dtype, device)


def set_names(names: Sequence[str] | None = None) -> list[str]:
    """Validated set names (all sets when ``names`` is empty)."""
    if not names:
        return list(SETS)
    for n in names:
        get_set(n)
    return list(names)
