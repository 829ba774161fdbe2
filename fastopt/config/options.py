"""Command-line overrides: ``--cfg-options KEY=VALUE ...`` parsed like MMEngine's ``DictAction``.

Values are parsed, never evaluated: ``1`` → int, ``1.5`` → float, ``true``/``false`` (any case)
→ bool, ``None`` → None, ``[a,b]`` → list, ``(a,b)`` → tuple (nested brackets allowed), bare
commas ``1,2,3`` → list, anything else → str. Quotes around the value are stripped and spaces
removed (MMEngine does the same: ``e=hello world`` → ``'helloworld'``).
"""

from __future__ import annotations

import argparse
import copy
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .errors import ConfigKeyError

logger = logging.getLogger(__name__)


def parse_scalar(text: str) -> Any:
    """int, then float, then bool, then None, else the string itself."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if text == "None":
        return None
    return text


def _next_top_level_comma(text: str) -> int:
    depth = 0
    for i, char in enumerate(text):
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            return i
    return len(text)


def parse_value(text: str) -> Any:
    """Parse one override value (see the module docstring)."""
    if text.count("(") != text.count(")") or text.count("[") != text.count("]"):
        raise ValueError(f"Imbalanced brackets exist in {text}")
    text = text.strip("'\"").replace(" ", "")
    is_tuple = False
    if text.startswith("(") and text.endswith(")"):
        is_tuple = True
        text = text[1:-1]
    elif text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    elif text.startswith("dict("):
        raise ValueError(
            f"{text}: values are parsed, not evaluated, so dict(...) is not accepted; set "
            "each key on its own (a.b.type=X a.b.lr=0.1)"
        )
    elif "," not in text or _next_top_level_comma(text) == len(text):
        return parse_scalar(text)  # e.g. f(1,2): its commas are inside brackets
    values = []
    while text:
        end = _next_top_level_comma(text)
        values.append(parse_value(text[:end]))
        text = text[end + 1 :]
    return tuple(values) if is_tuple else values


def parse_cfg_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=[1,2]']`` → ``{'a.b': 1, 'c': [1, 2]}`` (for ``Config.merge_from_dict``)."""
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"a config override must look like KEY=VALUE, but got {pair!r}")
        options[key] = parse_value(value)
    return options


def check_override_paths(cfg: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Fail, naming the override, when a dotted key cannot be applied to ``cfg``.

    Each part of ``'a.b.c'`` must be a key of a dict (a missing key is created, as in
    MMEngine), or an index 0..n-1 of a list. A tuple, or a value that is not a container
    (``None``, a number, a string), cannot take a sub-key: the whole value must be given.
    """
    for option in options:
        parts = str(option).split(".")
        node: Any = cfg
        for i, part in enumerate(parts):
            container = ".".join(parts[:i])
            rest = ".".join(parts[i + 1 :])
            if isinstance(node, Mapping):
                if part not in node:
                    break  # a new key: MMEngine creates it (and everything below it)
                node = node[part]
            elif isinstance(node, list):
                n = len(node)
                if n == 0:
                    raise ConfigKeyError(
                        f"{option}: {container} is an empty list; give the whole value of "
                        f"{container} instead"
                    )
                if not part.isdigit():
                    example = ", ".join(
                        ".".join(p for p in (container, str(j), part, rest) if p)
                        for j in range(min(n, 2))
                    )
                    raise ConfigKeyError(
                        f"{option}: {container} is a list of {n} items, so {part!r} must be an "
                        f"index from 0 to {n - 1} (e.g. {example})"
                    )
                if int(part) >= n:
                    raise ConfigKeyError(  # MMEngine's words, with the option and list named
                        f"{option}: Index {part} exceeds the length of list {container} ({n} items)"
                    )
                node = node[int(part)]
            else:
                kind = (
                    "a tuple, which cannot be changed item by item"
                    if isinstance(node, tuple)
                    else f"{node!r}, which has no keys"
                )
                raise ConfigKeyError(
                    f"{option}: {container} is {kind}; give the whole value of {container} instead"
                )


class DictAction(argparse.Action):
    """argparse action collecting ``KEY=VALUE`` pairs into a dict (use ``nargs='+'``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        options = copy.copy(getattr(namespace, self.dest, None) or {})
        if values is not None:
            if isinstance(values, str):
                values = [values]
            try:
                options.update(parse_cfg_options(values))
            except ValueError as e:
                parser.error(f"{option_string or self.dest}: {e}")
        setattr(namespace, self.dest, options)


def add_args(
    parser: argparse.ArgumentParser, cfg: Mapping[str, Any], prefix: str = ""
) -> argparse.ArgumentParser:
    """Add an option ``--a.b`` for every scalar (or list of scalars) ``a.b`` of ``cfg``.

    As MMEngine's ``add_args``: a str, int or float value gives an option of that type, a dict
    its keys under ``a.``, a list or tuple of one scalar type ``nargs='+'``. A bool gives
    ``--a.b`` / ``--no-a.b`` (MMEngine: ``store_true`` only). Options not given are None, so
    ``{k: v for k, v in vars(args).items() if v is not None}`` holds just what was set. Other
    values (None, empty or mixed lists, lists of dicts) get no option: MMEngine logs them (or
    fails on an empty list); here they are logged.
    """
    for key, value in cfg.items():
        name = f"--{prefix}{key}"
        if isinstance(value, bool):  # before int: bool is an int
            parser.add_argument(name, action=argparse.BooleanOptionalAction, default=None)
        elif isinstance(value, (str, int, float)):
            parser.add_argument(name, type=type(value))
        elif isinstance(value, Mapping):
            add_args(parser, value, f"{prefix}{key}.")
        elif (
            isinstance(value, (list, tuple))
            and value
            and type(value[0]) in (str, int, float)
            and all(type(item) is type(value[0]) for item in value)
        ):
            parser.add_argument(name, type=type(value[0]), nargs="+")
        else:
            logger.info("cannot parse key %s%s of type %s", prefix, key, type(value))
    return parser
