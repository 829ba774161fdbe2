"""``BaseModule``: ``nn.Module`` with MMEngine's ``init_weights`` protocol.

The runner calls ``model.init_weights()`` once before training (before a checkpoint is
loaded). ``BaseModule.init_weights`` calls ``init_weights`` of every child that has one and
is not initialised yet, then marks the module initialised, so a model written for MMEngine
-- whose ``init_weights`` ends with ``super().init_weights()`` -- works unchanged.

MMEngine's weight initialisers (``init_cfg=dict(type='Kaiming', ...)``, ``'Pretrained'``)
are not implemented: a module with an ``init_cfg`` logs a warning that it was not applied
(initialise in ``init_weights``, or load weights with ``load_from``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping

from torch import nn

from .utils import is_model_wrapper

logger = logging.getLogger(__name__)


class BaseModule(nn.Module):
    """Base of modules with an ``init_weights`` step (MMEngine's ``BaseModule``).

    Args:
        init_cfg: MMEngine's initialiser config; kept (``self.init_cfg``) but not applied.
    """

    def __init__(self, init_cfg: dict | list[dict] | None = None) -> None:
        super().__init__()
        self._is_init = False
        self.init_cfg = copy.deepcopy(init_cfg)

    @property
    def is_init(self) -> bool:
        """Whether :meth:`init_weights` has run."""
        return self._is_init

    @is_init.setter
    def is_init(self, value: bool) -> None:
        self._is_init = value

    def init_weights(self) -> None:
        """Initialise the children that have ``init_weights`` (once); override to add
        your own initialisation and call ``super().init_weights()``."""
        name = type(self).__name__
        if self._is_init:
            logger.warning("init_weights of %s has been called more than once.", name)
            return
        if self.init_cfg:
            logger.warning(
                "%s: init_cfg=%r is not applied (fastopt has no weight initializers); "
                "initialise the weights in init_weights(), or load them with load_from",
                name,
                self.init_cfg,
            )
        for child in self.children():
            if is_model_wrapper(child) and not hasattr(child, "init_weights"):
                child = child.module
            if hasattr(child, "init_weights") and not getattr(child, "is_init", False):
                child.init_weights()
        self._is_init = True

    def __repr__(self) -> str:
        text = super().__repr__()
        return f"{text}\ninit_cfg={self.init_cfg}" if self.init_cfg else text


class Sequential(BaseModule, nn.Sequential):
    """``nn.Sequential`` with :meth:`BaseModule.init_weights`."""

    def __init__(self, *args: nn.Module, init_cfg: dict | list[dict] | None = None) -> None:
        BaseModule.__init__(self, init_cfg)
        nn.Sequential.__init__(self, *args)


class ModuleList(BaseModule, nn.ModuleList):
    """``nn.ModuleList`` with :meth:`BaseModule.init_weights`."""

    def __init__(
        self,
        modules: Iterable[nn.Module] | None = None,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        BaseModule.__init__(self, init_cfg)
        nn.ModuleList.__init__(self, modules)


class ModuleDict(BaseModule, nn.ModuleDict):
    """``nn.ModuleDict`` with :meth:`BaseModule.init_weights`."""

    def __init__(
        self,
        modules: Mapping[str, nn.Module] | Iterable[tuple[str, nn.Module]] | None = None,
        init_cfg: dict | list[dict] | None = None,
    ) -> None:
        BaseModule.__init__(self, init_cfg)
        nn.ModuleDict.__init__(self, modules)
