"""Precision options of the fused optimizers: where states live and how 16-bit params are written.

A float16/bfloat16 param updated in place loses every update smaller than half its ulp (for a
weight of 1.0 in bfloat16, ``lr * update < 2**-9``), so long low-precision runs stall. Three
remedies, each a property of the param's load and store in the engine (``csrc/core/precision.h``),
so every optimizer has all of them:

- ``master_weights=True``: a float32 copy per 16-bit param (state ``master_param``) is what the
  update reads and writes; the param is written as its rounding, in the same pass.
- ``bf16_rounding='stochastic'``: bfloat16 params are rounded up with probability equal to the
  fraction the rounding drops (unbiased: the expected value is the float32 result), with random
  bits from a counter-based generator keyed on (seed, step, tensor, element), so results do not
  depend on threads, chunking or engine. The seed and the step count are the group keys
  ``rounding_seed`` and ``rounding_step`` (in ``state_dict()``: a resumed run rounds as the
  original).
- ``kahan_summation=True``: a compensation buffer per 16-bit param (state ``kahan_comp``, of the
  param's dtype: 2 bytes per param instead of the 4 of a master copy) carries what each rounding
  lost into the next step.

float32 params are never affected; ``bf16_rounding`` leaves float16 params at nearest rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import torch

from fastopt.ops import catalog

StateDtype = Union[torch.dtype, str]


@dataclasses.dataclass(frozen=True)
class Precision:
    """The precision options an optimizer was built with (keywords of every fused optimizer).

    Args:
        state_dtype: dtype of the optimizer states: ``torch.float32`` (default, also for
            float16/bfloat16 params), ``"param"`` for the param's own dtype, as torch does, or
            ``"8bit"``: blockwise-quantized uint8 codes with a float32 absmax per block of 256
            (:mod:`fastopt.ops.quant8`) for params of at least 4096 elements, float32 states
            for smaller ones.
        master_weights: keep a float32 master copy of each 16-bit param (state ``master_param``).
        bf16_rounding: ``"nearest"`` (torch's rounding) or ``"stochastic"`` for bfloat16 params.
        kahan_summation: Kahan-compensated updates of 16-bit params (state ``kahan_comp``).
        rounding_seed: seed of stochastic rounding (default: drawn from torch's default
            generator, so ``torch.manual_seed`` makes a run repeatable).
    """

    state_dtype: StateDtype = torch.float32
    master_weights: bool = False
    bf16_rounding: str = "nearest"
    kahan_summation: bool = False
    rounding_seed: int | None = None

    def __post_init__(self) -> None:
        if self.state_dtype not in (torch.float32, "param", "8bit"):
            raise ValueError(
                f"state_dtype must be torch.float32, 'param' or '8bit', got {self.state_dtype!r}"
            )
        for name in ("master_weights", "kahan_summation"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.bf16_rounding not in ("nearest", "stochastic"):
            raise ValueError(
                f"bf16_rounding must be 'nearest' or 'stochastic', got {self.bf16_rounding!r}"
            )
        chosen = [
            name
            for name, on in (
                ("master_weights=True", self.master_weights),
                ("kahan_summation=True", self.kahan_summation),
                ("bf16_rounding='stochastic'", self.stochastic),
            )
            if on
        ]
        if len(chosen) > 1:
            raise ValueError(
                f"choose one of {' and '.join(chosen)}: each keeps the updates that a 16-bit "
                "param cannot hold (master copy, compensation or unbiased rounding)"
            )
        if self.rounding_seed is not None:
            if not self.stochastic:
                raise ValueError("rounding_seed is used by bf16_rounding='stochastic' only")
            if isinstance(self.rounding_seed, bool) or not isinstance(self.rounding_seed, int):
                raise TypeError(f"rounding_seed must be an int, got {self.rounding_seed!r}")
            if not 0 <= self.rounding_seed < 2**32:
                raise ValueError(f"rounding_seed must be in [0, 2**32), got {self.rounding_seed}")

    @property
    def stochastic(self) -> bool:
        return self.bf16_rounding == "stochastic"

    def mode(self, dtype: torch.dtype) -> str:
        """The engine's param mode for a param of this dtype (csrc/core/precision.h)."""
        if dtype == torch.float32:
            return "nearest"
        if self.master_weights:
            return "master"
        if self.kahan_summation:
            return "kahan"
        if self.stochastic and dtype == torch.bfloat16:
            return "stochastic"
        return "nearest"

    def group_defaults(self) -> dict[str, Any]:
        """Group keys these options add (stochastic rounding's seed and step count)."""
        if not self.stochastic:
            return {}
        seed = self.rounding_seed
        if seed is None:
            seed = int(torch.randint(0, 2**32, (), dtype=torch.int64))
        seed_key, step_key = catalog.rounding_keys()
        return {seed_key: seed, step_key: 0}

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))
