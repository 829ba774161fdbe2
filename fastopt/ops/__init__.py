"""Python side of the fused core: packing tensors into the engine's cached launch tables."""

from fastopt.ops.plan import Plan, StateSpec

__all__ = ["Plan", "StateSpec"]
