"""Use fastopt's fused optimizers from MMEngine configs, under MMEngine's own Runner.

Importing this module registers into MMEngine's root registries (so every downstream scope,
e.g. ``mmdet``, finds them through its parents)::

    custom_imports = dict(imports=['fastopt.integrations.mmengine'], allow_failed_imports=False)
    optim_wrapper = dict(optimizer=dict(type='FusedAdamW', lr=1e-3, weight_decay=0.05),
                         paramwise_cfg=dict(norm_decay_mult=0.0))

* ``OPTIMIZERS``: every fused optimizer of :mod:`fastopt.catalog` (``FusedSGD``,
  ``FusedAdamW``, ``FusedLAMB``, ...) and the names configs use for them (``LARS``, ``Lamb``,
  ``Lion``, ``Adan``, as mmpretrain / timm name them) unless a name is already taken.
* ``OPTIM_WRAPPERS``: ``FusedOptimWrapper``, an MMEngine ``OptimWrapper`` whose clip-and-step
  goes through fastopt's wrapper (its fused gradient pipeline when the optimizer is a fastopt
  one); MMEngine's ``OptimWrapper`` keeps its name and behaviour.

Names already registered to something else are left alone (with a warning) unless
:func:`register` is called with ``force=True``.
"""

from __future__ import annotations

import warnings
from typing import Any

try:
    from mmengine.optim import OptimWrapper as _MMEngineOptimWrapper
    from mmengine.registry import OPTIM_WRAPPERS as MMENGINE_OPTIM_WRAPPERS
    from mmengine.registry import OPTIMIZERS as MMENGINE_OPTIMIZERS
except ImportError as e:  # pragma: no cover - exercised only without mmengine
    raise ImportError(
        "fastopt.integrations.mmengine needs MMEngine: pip install mmengine "
        "(or mmengine-lite plus opencv-python-headless)"
    ) from e

import torch

from fastopt.catalog import registry_names

OPTIMIZER_NAMES = tuple(registry_names())


class FusedOptimWrapper(_MMEngineOptimWrapper):
    """MMEngine's ``OptimWrapper`` with fastopt's clip-and-step.

    Accumulation, loss scaling for accumulation, ``optim_context`` and state dicts are
    MMEngine's; gradient clipping and the optimizer step are delegated to
    :class:`fastopt.wrapper.OptimWrapper`, which logs ``train/grad_norm`` into MMEngine's
    message hub. Same arguments as MMEngine's ``OptimWrapper``; ``clip_grad`` is not modified.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        accumulative_counts: int = 1,
        clip_grad: dict[str, Any] | None = None,
    ) -> None:
        from fastopt.wrapper import OptimWrapper

        super().__init__(optimizer, accumulative_counts=accumulative_counts, clip_grad=None)
        self.fastopt_wrapper = OptimWrapper(optimizer, clip_grad=clip_grad)
        self.fastopt_wrapper.message_hub = self.message_hub  # MMEngine's hub, for the logger

    def step(self, **kwargs: Any) -> None:
        """Clip (if configured) and step, through fastopt's wrapper."""
        self.fastopt_wrapper.step(**kwargs)


def _register(registry: Any, name: str, module: Any, force: bool) -> bool:
    existing = registry.module_dict.get(name)
    if existing is module:
        return True
    if existing is not None and not force:
        warnings.warn(
            f"MMEngine's {registry.name} registry already has {name} "
            f"({getattr(existing, '__module__', '?')}.{getattr(existing, '__qualname__', '?')}); "
            f"fastopt's {module.__name__} is not registered under that name",
            stacklevel=3,
        )
        return False
    registry.register_module(name=name, module=module, force=force)
    return True


def register(force: bool = False) -> dict[str, list[str]]:
    """Register fastopt's optimizers and wrappers into MMEngine; returns the names registered.

    Idempotent. ``force=True`` replaces entries of the same name registered by others.
    """
    from fastopt import optim

    done: dict[str, list[str]] = {"optimizers": [], "optim_wrappers": []}
    optimizers = {name: getattr(optim, cls) for name, cls in registry_names().items()}
    for name, cls in optimizers.items():
        if _register(MMENGINE_OPTIMIZERS, name, cls, force):
            done["optimizers"].append(name)
    if _register(MMENGINE_OPTIM_WRAPPERS, "FusedOptimWrapper", FusedOptimWrapper, force):
        done["optim_wrappers"].append("FusedOptimWrapper")
    return done


REGISTERED = register()
