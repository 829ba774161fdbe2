"""``ConfigDict``: a dict with attribute access that remembers where it came from.

Like MMEngine's (addict-based) ConfigDict: nested dicts become ConfigDicts, ``cfg.a.b`` reads
``cfg['a']['b']``, a missing attribute raises ``AttributeError`` and a missing item
``KeyError`` (nothing is created on access). In addition each ConfigDict loaded from a file
knows the file and its key path, so errors raised while building from it (unknown ``type``,
bad keyword) can say ``config file x.py, key optim_wrapper.optimizer``.
"""

from __future__ import annotations

import copy
import difflib
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

# instance attributes (not keys): (filename, key path), and the keys of this dict whose value
# an override set (Config.merge_from_dict, i.e. --cfg-options)
_SOURCE = "_fastopt_source_"
_OVERRIDES = "_fastopt_overrides_"
_ATTRIBUTES = (_SOURCE, _OVERRIDES)


def to_config_value(value: Any) -> Any:
    """Convert plain dicts (also inside lists and tuples) to ConfigDicts, recursively.

    As MMEngine's ``ConfigDict._hook``: only ``dict`` and ``OrderedDict`` are converted; other
    dict subclasses (``defaultdict``, a user's own) are kept as they are, with their contents.
    A list subclass keeps its type; a tuple subclass (a namedtuple) is kept as it is.
    """
    if type(value) in (dict, OrderedDict):
        return ConfigDict(value)
    if isinstance(value, list):
        return type(value)(to_config_value(v) for v in value)
    if type(value) is tuple:
        return tuple(to_config_value(v) for v in value)
    return value


def to_plain(value: Any) -> Any:
    """Convert every dict (also inside lists and tuples) to a plain dict, recursively.

    As MMEngine's ``to_dict``: dict subclasses become plain dicts too; a list subclass keeps
    its type.
    """
    if isinstance(value, Mapping):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return type(value)(to_plain(v) for v in value)
    if type(value) is tuple:
        return tuple(to_plain(v) for v in value)
    return value


class ConfigDict(dict):
    """A dict of config values with attribute access (``cfg.optimizer.lr``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        for key, value in dict(*args, **kwargs).items():
            dict.__setitem__(self, key, to_config_value(value))
        for name in _ATTRIBUTES:
            self.__dict__[name] = getattr(args[0], name, None) if args else None

    # ---------------------------------------------------------------- attribute access
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in _ATTRIBUTES:
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(self._missing_message(name)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _ATTRIBUTES:
            self.__dict__[name] = value
        else:
            self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError:
            raise AttributeError(self._missing_message(name)) from None

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, to_config_value(value))

    def __missing__(self, key: Any) -> Any:
        raise KeyError(key)

    def _missing_message(self, name: str) -> str:
        msg = f"'{type(self).__name__}' object has no attribute '{name}'"
        details = []
        origin = self._origin()
        if origin:
            details.append(origin)
        close = difflib.get_close_matches(name, [k for k in self if isinstance(k, str)], n=1)
        if close:
            details.append(f"did you mean '{close[0]}'?")
        return msg + (f" ({'; '.join(details)})" if details else "")

    # ---------------------------------------------------------------- dict API
    def update(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]

    def copy(self) -> ConfigDict:
        """A shallow copy that keeps the origin."""
        new = ConfigDict()
        for key, value in self.items():
            dict.__setitem__(new, key, value)
        new.__dict__.update(self.__dict__)
        return new

    __copy__ = copy

    def __deepcopy__(self, memo: dict[int, Any]) -> ConfigDict:
        new = ConfigDict()
        memo[id(self)] = new
        for key, value in self.items():
            dict.__setitem__(new, copy.deepcopy(key, memo), copy.deepcopy(value, memo))
        new.__dict__.update(self.__dict__)
        return new

    def __reduce_ex__(self, protocol: Any) -> Any:
        return (ConfigDict, (), dict(self.__dict__), None, iter(self.items()))

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def to_dict(self) -> dict:
        """A plain ``dict`` copy (nested ConfigDicts converted too)."""
        return to_plain(self)

    # ---------------------------------------------------------------- origin
    def _key_source(self) -> tuple[str | None, str]:
        """(config file, key path) this dict was loaded from; read by registry errors."""
        return self.__dict__.get(_SOURCE) or (None, "")

    def _overridden(self, key: Any) -> bool:
        """Whether an override (``merge_from_dict``, ``--cfg-options``) set ``self[key]``."""
        return key in (self.__dict__.get(_OVERRIDES) or ())

    def _mark_overridden(self, key: Any) -> None:
        self.__dict__[_OVERRIDES] = frozenset({*(self.__dict__.get(_OVERRIDES) or ()), key})

    def _origin(self) -> str:
        filename, path = self._key_source()
        parts = []
        if filename:
            parts.append(f"config file {filename}")
        if path:
            parts.append(f"key {path}")
        return ", ".join(parts)

    def _set_source(self, filename: str | None, path: str = "") -> None:
        """Record (filename, key path) on this dict and every dict nested in it."""
        self.__dict__[_SOURCE] = (filename, path)
        for key, value in self.items():
            _tag(value, filename, f"{path}.{key}" if path else str(key))


def _tag(value: Any, filename: str | None, path: str) -> None:
    if isinstance(value, ConfigDict):
        value._set_source(filename, path)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _tag(item, filename, f"{path}.{i}")
