"""``OptimWrapperDict``: several named optimizer wrappers (GANs, multi-optimizer models).

Backward and step are ambiguous across wrappers (which loss, which scaler), so, as in MMEngine,
the model calls them on ``optim_wrapper['name']``; the dict only gathers what a runner needs
from all of them at once: lr/momentum for logging, state dicts for checkpoints, zero_grad.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from fastopt.registry import OPTIM_WRAPPERS
from fastopt.wrapper.optim_wrapper import OptimWrapper


@OPTIM_WRAPPERS.register_module()
class OptimWrapperDict(OptimWrapper):
    """A mapping of names to :class:`OptimWrapper` instances.

    It is an ``OptimWrapper`` subclass (so ``isinstance`` checks in a runner accept it) but
    has no optimizer of its own: ``update_params``, ``backward``, ``step`` and
    ``optim_context`` raise ``NotImplementedError``; call them on ``self[name]``.
    """

    def __init__(self, **optim_wrapper_dict: OptimWrapper) -> None:
        for key, value in optim_wrapper_dict.items():
            if not isinstance(value, OptimWrapper):
                raise TypeError(
                    "`OptimWrapperDict` only accept OptimWrapper instance, "
                    f"but got {key}: {type(value)}"
                )
        self.optim_wrappers: dict[str, OptimWrapper] = optim_wrapper_dict

    def update_params(
        self,
        loss: torch.Tensor,
        step_kwargs: dict[str, Any] | None = None,
        zero_kwargs: dict[str, Any] | None = None,
    ) -> None:
        raise NotImplementedError("`update_params` should be called by each optimizer separately`")

    def backward(self, loss: torch.Tensor, **kwargs: Any) -> None:
        raise NotImplementedError("`backward` should be called by each optimizer separately`")

    def step(self, **kwargs: Any) -> None:
        raise NotImplementedError("`step` should be called by each optimizer separately`")

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        raise NotImplementedError("`optim_context` should be called by each optimizer separately")
        yield  # pragma: no cover  (makes this a generator, as the context manager needs)

    def zero_grad(self, **kwargs: Any) -> None:
        """Zero the grads of every wrapper."""
        for optim_wrapper in self.optim_wrappers.values():
            optim_wrapper.zero_grad(**kwargs)

    def initialize_count_status(self, model: nn.Module, init_counts: int, max_counts: int) -> None:
        """Does nothing: which wrapper belongs to which sub-model is the model's business."""

    @property
    def param_groups(self) -> dict[str, list[dict[str, Any]]]:  # type: ignore[override]
        """``{name: wrapper.param_groups}``."""
        return {name: w.param_groups for name, w in self.optim_wrappers.items()}

    def get_lr(self) -> dict[str, list[float]]:
        """``{'<name>.lr': [...]}`` for every wrapper."""
        return {f"{name}.lr": w.get_lr()["lr"] for name, w in self.optim_wrappers.items()}

    def get_momentum(self) -> dict[str, list[float]]:
        """``{'<name>.momentum': [...]}`` for every wrapper."""
        return {
            f"{name}.momentum": w.get_momentum()["momentum"]
            for name, w in self.optim_wrappers.items()
        }

    def state_dict(self) -> dict[str, Any]:
        """``{name: wrapper.state_dict()}``."""
        return {name: w.state_dict() for name, w in self.optim_wrappers.items()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load each entry into the wrapper of that name (every name must exist here)."""
        for name, wrapper_state in state_dict.items():
            if name not in self.optim_wrappers:
                raise KeyError(
                    f"Mismatched `state_dict`! cannot found {name} in OptimWrapperDict "
                    f"(it has {list(self.optim_wrappers)})"
                )
            self.optim_wrappers[name].load_state_dict(wrapper_state)

    def items(self) -> Iterator[tuple[str, OptimWrapper]]:
        yield from self.optim_wrappers.items()

    def values(self) -> Iterator[OptimWrapper]:
        yield from self.optim_wrappers.values()

    def keys(self) -> Iterator[str]:
        yield from self.optim_wrappers.keys()

    def __getitem__(self, key: str) -> OptimWrapper:
        if key not in self.optim_wrappers:
            raise KeyError(
                f"Cannot find {key} in OptimWrapperDict, please check your optimizer "
                f"constructor (it has {list(self.optim_wrappers)})."
            )
        return self.optim_wrappers[key]

    def __contains__(self, key: object) -> bool:
        return key in self.optim_wrappers

    def __len__(self) -> int:
        return len(self.optim_wrappers)

    def __repr__(self) -> str:
        return "".join(f"name: {name}\n{w!r}" for name, w in self.optim_wrappers.items())
