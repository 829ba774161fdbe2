"""Registers every ``torch.optim`` optimizer in OPTIMIZERS, the config names of the fused ones
(``LARS`` for ``FusedLARS``, ``Lamb``, ``Lion``, ``Adan``), and
``ZeroRedundancyOptimizer`` (MMEngine's config form, :mod:`fastopt.optim.zero_redundancy`).

Imported lazily (it is one of OPTIMIZERS' locations) so that ``import fastopt.registry``
does not import torch. Like MMEngine, torch's ``Adafactor`` is registered as
``TorchAdafactor`` (the plain name is left to other Adafactor implementations).
"""

from __future__ import annotations

import inspect

import torch

from .registry import import_if_exists
from .root import OPTIMIZERS

# torch name -> registry name, where they differ
_RENAMED = {"Adafactor": "TorchAdafactor"}


def register_torch_optimizers() -> list[str]:
    """Register each ``torch.optim.Optimizer`` subclass (incl. the base class); idempotent."""
    names = []
    for attr in dir(torch.optim):
        if attr.startswith("__"):
            continue
        obj = getattr(torch.optim, attr)
        if inspect.isclass(obj) and issubclass(obj, torch.optim.Optimizer):
            name = _RENAMED.get(attr, attr)
            if name not in OPTIMIZERS.module_dict:  # a user registration wins
                OPTIMIZERS.register_module(name=name, module=obj)
            names.append(name)
    return names


def register_fused_aliases() -> list[str]:
    """Register the names configs use for the fused optimizers (``LARS``, ``Lamb``, ``Lion``,
    ``Adan``: :mod:`fastopt.catalog`) when ``fastopt.optim`` provides them; a name that is
    already registered (a user registration) wins."""
    if import_if_exists("fastopt.optim") is None:  # registers the fused optimizers
        return []
    from fastopt.catalog import CATALOG

    names = []
    for entry in CATALOG:
        fused = OPTIMIZERS.module_dict.get(entry.name)
        for alias in entry.aliases if fused is not None else ():
            if alias not in OPTIMIZERS.module_dict:
                OPTIMIZERS.register_module(name=alias, module=fused)
            names.append(alias)
    return names


TORCH_OPTIMIZERS = register_torch_optimizers()
register_fused_aliases()
# MMEngine registers its ZeroRedundancyOptimizer in OPTIMIZERS too (golden g2 list)
import_if_exists("fastopt.optim.zero_redundancy")
