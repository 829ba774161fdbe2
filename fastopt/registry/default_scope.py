"""The default scope: which package's registries a ``type`` name is looked up in first.

MMEngine's Runner creates ``DefaultScope.get_instance(experiment_name, scope_name=...)`` and
``Registry.build`` then resolves names in the registry of that scope (falling back to its
parents). fastopt keeps the same class-level API without MMEngine's ``ManagerMixin``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar


class DefaultScope:
    """A named default scope; the most recently created or fetched instance is current."""

    _instances: ClassVar[dict[str, DefaultScope]] = {}
    _current: ClassVar[list[str]] = []
    _lock: ClassVar[threading.RLock] = threading.RLock()
    _counter: ClassVar[int] = 0

    def __init__(self, name: str, scope_name: str) -> None:
        if not isinstance(scope_name, str):
            raise TypeError(f"scope_name should be a str, but got {type(scope_name)}")
        self._instance_name = name
        self._scope_name = scope_name

    @property
    def scope_name(self) -> str:
        return self._scope_name

    @property
    def instance_name(self) -> str:
        return self._instance_name

    @classmethod
    def get_instance(cls, name: str, **kwargs) -> DefaultScope:
        """Return the instance called ``name`` (created from ``kwargs`` if new); it becomes current."""
        with cls._lock:
            if name not in cls._instances:
                cls._instances[name] = cls(name, **kwargs)
            # an existing instance keeps its scope: kwargs are ignored, as in MMEngine
            if name in cls._current:
                cls._current.remove(name)
            cls._current.append(name)
            return cls._instances[name]

    @classmethod
    def get_current_instance(cls) -> DefaultScope | None:
        """The current default scope, or None when none was created."""
        with cls._lock:
            return cls._instances[cls._current[-1]] if cls._current else None

    @classmethod
    def check_instance_created(cls, name: str) -> bool:
        return name in cls._instances

    @classmethod
    def release(cls, name: str) -> None:
        """Forget the instance called ``name`` (no error if absent)."""
        with cls._lock:
            cls._instances.pop(name, None)
            if name in cls._current:
                cls._current.remove(name)

    @classmethod
    @contextmanager
    def overwrite_default_scope(cls, scope_name: str | None) -> Iterator[None]:
        """Make ``scope_name`` the default scope inside the block (no-op for None)."""
        if scope_name is None:
            yield
            return
        with cls._lock:
            cls._counter += 1
            tmp = f"overwrite-{cls._counter}"
        cls.get_instance(tmp, scope_name=scope_name)
        try:
            yield
        finally:
            cls.release(tmp)
