"""8-bit optimizer states: blockwise dynamic quantization (``state_dtype='8bit'``).

Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (ICLR 2022). Each state of a
param with at least :func:`min_elems` elements (its global size) is stored as

- ``state[name]``: uint8 codes, laid out as the param (one per element),
- ``state[name + '_absmax']``: float32, one per block of :func:`block` elements (memory order),
- ``state[name + '_qmap']``: the 256 float32 values the codes index (the signed map for first
  moments, the unsigned one for states that are never negative, such as ``exp_avg_sq``),

and a value is ``qmap[code] * absmax[block]``. The engine dequantizes, updates in float32 and
requantizes in its one pass (``csrc/core/quant8.h``); the functions here convert whole tensors
and state dicts with the same code.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch

from fastopt._ext import require_C
from fastopt.ops import catalog

__all__ = [
    "ABSMAX_SUFFIX",
    "QMAP_SUFFIX",
    "block",
    "dequantize",
    "dequantize_state_dict",
    "min_elems",
    "qmap",
    "quantize",
]

ABSMAX_SUFFIX = "_absmax"
QMAP_SUFFIX = "_qmap"


def block() -> int:
    """Elements per quantization block (256)."""
    return catalog.quant_block()


def min_elems() -> int:
    """Params with fewer elements keep float32 states (4096, as bitsandbytes)."""
    return catalog.quant_min_elems()


@cache
def qmap(signed: bool) -> torch.Tensor:
    """The dynamic map (cpu, float32, 256 values, sorted); one shared tensor per kind."""
    return torch.tensor(catalog.quant_map(signed), dtype=torch.float32)


def _memory_order(t: torch.Tensor) -> list[int]:
    """The permutation of dims after which ``t`` (dense) is contiguous: the order the engine
    walks its memory, which is the order of its blocks."""
    return sorted(range(t.dim()), key=lambda d: (-t.stride(d), -t.shape[d]))


def zero_code(signed: bool) -> int:
    """The code of 0 (as ``quant::zero_code`` in csrc/core/quant8.h)."""
    return int((qmap(signed) == 0).nonzero()[0])


def blocks_of(numel: int) -> int:
    return (numel + block() - 1) // block()


def quantize(x: torch.Tensor, signed: bool, like: torch.Tensor | None = None):
    """(codes, absmax) of float values ``x``: codes laid out like ``like`` (default: ``x``'s
    shape, contiguous), blocks over their memory order. Runs on the host (conversions only)."""
    C = require_C()
    like = x if like is None else like
    order = _memory_order(like)
    if x.shape != like.shape:
        raise ValueError(f"quantize: values of shape {tuple(x.shape)} for {tuple(like.shape)}")
    codes = torch.empty_like(like, dtype=torch.uint8, device="cpu")
    flat = x.detach().to("cpu", torch.float32).permute(order).contiguous()
    out = torch.empty(flat.shape, dtype=torch.uint8)
    absmax = torch.empty(blocks_of(flat.numel()), dtype=torch.float32)
    C.quantize_8bit(flat.data_ptr(), flat.numel(), signed, out.data_ptr(), absmax.data_ptr())
    codes.permute(order).copy_(out)
    return codes.to(like.device), absmax.to(like.device)


def dequantize(codes: torch.Tensor, absmax: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Float32 values of ``codes`` (a tensor of uint8 codes) with their blocks' ``absmax`` and
    the map ``values`` they index; the result is contiguous with the codes' shape."""
    order = _memory_order(codes)
    flat = codes.permute(order).reshape(-1).long().cpu()
    scale = absmax.detach().float().cpu().repeat_interleave(block())[: flat.numel()]
    out = values.float().cpu()[flat] * scale  # one float32 product: the engine's decode
    shaped = out.reshape([codes.shape[d] for d in order])
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return shaped.permute(inverse).contiguous().to(codes.device)


def is_quantized(state: dict[str, Any], name: str) -> bool:
    value = state.get(name)
    return (
        isinstance(value, torch.Tensor)
        and value.dtype == torch.uint8
        and isinstance(state.get(name + ABSMAX_SUFFIX), torch.Tensor)
    )


def dequantized_state(state: dict[str, Any]) -> dict[str, Any]:
    """One param's state with every 8-bit state as float32 values (torch's layout)."""
    out = dict(state)
    for name in list(state):
        if not is_quantized(state, name):
            continue
        values = state.get(name + QMAP_SUFFIX)
        if values is None:
            raise KeyError(f"8-bit state '{name}' has no '{name}{QMAP_SUFFIX}' (its map)")
        out[name] = dequantize(state[name], state[name + ABSMAX_SUFFIX], values)
        out.pop(name + ABSMAX_SUFFIX)
        out.pop(name + QMAP_SUFFIX)
    return out


def dequantize_state_dict(state_dict: dict[str, Any]) -> dict[str, Any]:
    """An optimizer state dict with 8-bit states turned into torch's layout: each state a float32
    tensor of its param's shape, no ``_absmax`` / ``_qmap`` keys, so ``torch.optim.AdamW`` (or a
    fused optimizer with float32 states) loads it. Other entries are kept as they are."""
    return {
        **state_dict,
        "state": {k: dequantized_state(v) for k, v in state_dict["state"].items()},
    }
