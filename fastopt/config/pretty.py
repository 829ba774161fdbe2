"""Write a config dict as Python source that loads back to an equal dict.

Dicts whose keys are all identifiers are written ``dict(a=1)``, others as ``{'a b': 1}``;
lists, tuples (``(1,)`` for one item), str/int/float/bool/None are literals; ``inf``/``nan``
become ``float('inf')``. Classes and functions (``type=torch.optim.SGD``) are written as their
dotted import path, which the registry resolves. Lines are wrapped at ``width`` columns.
"""

from __future__ import annotations

import keyword
import math
from collections.abc import Mapping
from typing import Any

INDENT = "    "


def _is_identifier(key: Any) -> bool:
    return isinstance(key, str) and key.isidentifier() and not keyword.iskeyword(key)


def _scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        return f"float('{value}')"
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return repr(value)
    if isinstance(value, type) or callable(value):
        module = getattr(value, "__module__", None)
        qualname = getattr(value, "__qualname__", None)
        if module and qualname and "<" not in qualname:
            return repr(f"{module}.{qualname}")
    raise TypeError(
        f"cannot write a {type(value).__name__} ({value!r}) into a Python config; "
        "use plain values, lists, tuples and dicts"
    )


def _items(value: Any) -> tuple[str, str, list[tuple[str, Any]]]:
    """(open, close, [(prefix, item)]) for a container."""
    if isinstance(value, Mapping):
        if all(_is_identifier(k) for k in value):
            return "dict(", ")", [(f"{k}=", v) for k, v in value.items()]
        return "{", "}", [(f"{_scalar(k)}: ", v) for k, v in value.items()]
    if isinstance(value, tuple):
        return "(", ")", [("", v) for v in value]
    return "[", "]", [("", v) for v in value]


def format_value(value: Any, level: int = 0, column: int = 0, width: int = 100) -> str:
    """Python source for ``value`` nested ``level`` deep and starting at ``column``."""
    if not isinstance(value, (Mapping, list, tuple)):
        return _scalar(value)
    opening, closing, items = _items(value)
    flat = [prefix + format_value(item, 0, 0, 10**9) for prefix, item in items]
    trailing = "," if isinstance(value, tuple) and len(items) == 1 else ""
    one_line = opening + ", ".join(flat) + trailing + closing
    if column + len(one_line) <= width or not items:
        return one_line
    pad = INDENT * (level + 1)
    lines = [
        pad + prefix + format_value(item, level + 1, len(pad) + len(prefix), width) + ","
        for prefix, item in items
    ]
    return opening + "\n" + "\n".join(lines) + "\n" + INDENT * level + closing


def format_config(cfg: Mapping[str, Any], width: int = 100) -> str:
    """A whole config as ``key = value`` statements."""
    lines = []
    for key, value in cfg.items():
        if not _is_identifier(key):
            raise ValueError(
                f"the top-level key {key!r} is not a Python name; dump this config as "
                ".json or .yaml instead"
            )
        lines.append(f"{key} = {format_value(value, 0, len(key) + 3, width)}")
    return "\n".join(lines) + "\n"
