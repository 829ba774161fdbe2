"""Python side of the fused core: packing tensors into the engine's cached launch tables."""

from fastopt.ops.plan import DTYPE_CODES, Plan, StateSpec

__all__ = ["DTYPE_CODES", "Plan", "StateSpec"]
