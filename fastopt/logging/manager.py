"""Named, process-wide instances (MMEngine's ``ManagerMixin`` semantics).

A runner, its hooks and its optimizer wrappers must share one message hub (and one logger)
without passing it through every call: each such class keeps its instances by name, and
``get_current_instance()`` returns the one created last.
"""

from __future__ import annotations

import threading
import warnings
from collections import OrderedDict
from typing import Any, ClassVar, TypeVar

_T = TypeVar("_T", bound="ManagerMixin")
_lock = threading.RLock()


class ManagerMixin:
    """Base class giving a subclass ``get_instance(name)`` and ``get_current_instance()``.

    Every subclass has its own instance table (a ``MessageHub`` named ``"x"`` and a logger
    named ``"x"`` are different objects). Only instances made through :meth:`get_instance`
    are registered; constructing the class directly gives a private instance.
    """

    _instance_dict: ClassVar[OrderedDict[str, ManagerMixin]] = OrderedDict()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._instance_dict = OrderedDict()

    def __init__(self, name: str = "", **kwargs: Any) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty str, but got {name!r}")
        self._instance_name = name

    @classmethod
    def get_instance(cls: type[_T], name: str, **kwargs: Any) -> _T:
        """Return the instance called ``name``, creating it (with ``kwargs``) if needed."""
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, but got {type(name).__name__}: {name!r}")
        with _lock:
            if name not in cls._instance_dict:
                cls._instance_dict[name] = cls(name=name, **kwargs)
            elif kwargs:
                warnings.warn(
                    f"{cls.__name__} instance {name!r} already exists; the arguments "
                    f"{sorted(kwargs)} given to get_instance are ignored",
                    stacklevel=2,
                )
            return cls._instance_dict[name]  # type: ignore[return-value]

    @classmethod
    def get_current_instance(cls: type[_T]) -> _T:
        """Return the instance created last through :meth:`get_instance`."""
        with _lock:
            if not cls._instance_dict:
                raise RuntimeError(
                    f"Before calling {cls.__name__}.get_current_instance(), call "
                    f"{cls.__name__}.get_instance(name) at least once."
                )
            return next(reversed(cls._instance_dict.values()))  # type: ignore[return-value]

    @classmethod
    def check_instance_created(cls, name: str) -> bool:
        """Whether :meth:`get_instance` has created an instance called ``name``."""
        return name in cls._instance_dict

    @property
    def instance_name(self) -> str:
        """The name this instance was created with."""
        return self._instance_name
