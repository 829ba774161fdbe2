"""How a child config is merged into its base (and overrides into a config), as MMEngine.

* a dict merges key by key into a dict of the base;
* ``_delete_=True`` in a child dict replaces the base value instead of merging;
* every other value (lists too: lists are never merged) replaces the base value;
* with ``allow_list_keys`` (overrides), a numeric key indexes into a list.
"""

from __future__ import annotations

from typing import Any

from .config_dict import ConfigDict
from .errors import ConfigKeyError, where

DELETE_KEY = "_delete_"


def merge_a_into_b(
    a: dict,
    b: Any,
    allow_list_keys: bool = False,
    filename: str | None = None,
    path: str = "",
) -> Any:
    """Return ``b`` updated with ``a`` (``b`` is copied; ``a``'s ``_delete_`` keys are consumed).

    ``filename`` and ``path`` only make error messages point at the offending key.
    """
    b = b.copy()
    for key, value in a.items():
        key_path = f"{path}.{key}" if path else str(key)
        if allow_list_keys and isinstance(key, str) and key.isdigit() and isinstance(b, list):
            index = int(key)
            if index >= len(b):
                raise ConfigKeyError(
                    f"Index {index} exceeds the length of list {b} ({where(filename, key_path)})"
                )
            if isinstance(value, dict) and isinstance(b[index], (dict, list)):
                b[index] = merge_a_into_b(value, b[index], allow_list_keys, filename, key_path)
            else:
                b[index] = value
        elif isinstance(value, dict):
            if key in b and not value.pop(DELETE_KEY, False):
                allowed = (dict, list) if allow_list_keys else dict
                if not isinstance(b[key], allowed):
                    raise TypeError(
                        f"{key}={value} in child config cannot inherit from base because "
                        f"{key} is a dict in the child config but is of type {type(b[key])} "
                        f"in base config. You may set `{DELETE_KEY}=True` to ignore the base "
                        f"config. ({where(filename, key_path)})"
                    )
                b[key] = merge_a_into_b(value, b[key], allow_list_keys, filename, key_path)
            else:
                # MMEngine keeps a `_delete_` key of a dict that has nothing to replace
                b[key] = ConfigDict(value)
        else:
            b[key] = value
    return b
