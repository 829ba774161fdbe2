"""Which objects a dotted ``type`` path may name: one rule for every registry and config source.

A config names what to build by a registered name (``'FusedAdamW'``) or by a full dotted
import path (``'torch.optim.SGD'``). JSON and YAML files and ``--cfg-options`` are data: they
may come from anywhere. If a dotted path could resolve to any callable, such data could run
code (``type='os.system', command='...'``). So a dotted path resolves only to

* a class that belongs in the registry being searched: a subclass of one of its
  ``member_types`` (``torch.optim.Optimizer`` for OPTIMIZERS, ``Hook`` for HOOKS, ...), or
* an object registered in that registry or its ancestors (under whatever name).

Anything else is refused with :class:`DisallowedTypeError` before it is called: functions,
builtins (``builtins.eval``, ``pickle.loads``, ``subprocess.run``), modules, and classes
that do not belong there (``subprocess.Popen``). Only the import of the module named by the
path's prefix happens, as it would for ``custom_imports``.

Code can widen the rule. ``with allow_dotted_types(): ...`` resolves dotted paths as MMEngine
does, to any object, modules included. ``fastopt train|test CONFIG.py --allow-dotted-types``
does the same for a ``.py`` config; it is refused for JSON and YAML. Objects given directly
(``type=torch.optim.SGD`` in a ``.py`` config or in Python code) are never restricted: they
are code already.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import DisallowedTypeError

if TYPE_CHECKING:
    from .registry import Registry

# process-wide (not a ContextVar): runner threads and hooks must see the CLI's choice too
_allowed = False
_lock = threading.Lock()

WIDEN_HINT = (
    "register it (REGISTRY.register_module()), give the class itself in a .py config, "
    "or opt in with `fastopt train CONFIG.py --allow-dotted-types` "
    "(fastopt.registry.allow_dotted_types() in Python)"
)


def dotted_types_allowed() -> bool:
    """Whether dotted paths currently resolve to any object (the widened rule)."""
    return _allowed


@contextmanager
def allow_dotted_types(enabled: bool = True) -> Iterator[None]:
    """Inside the block, dotted paths resolve to any object, as in MMEngine (if ``enabled``)."""
    global _allowed
    with _lock:
        previous, _allowed = _allowed, _allowed or bool(enabled)
    try:
        yield
    finally:
        with _lock:
            _allowed = previous


@contextmanager
def dotted_types_for_config(config_path: str, allow: bool) -> Iterator[None]:
    """:func:`allow_dotted_types` for a command run on ``config_path``; only a ``.py`` config
    (code by design) may widen the rule: a JSON/YAML file is data."""
    if allow and os.path.splitext(config_path)[1] != ".py":
        raise DisallowedTypeError(
            f"--allow-dotted-types is only for .py configs; {config_path} is a data file "
            "(JSON/YAML), whose dotted types name only classes that belong in their registry"
        )
    with allow_dotted_types(allow):
        yield


def _describe(obj: Any) -> str:
    if isinstance(obj, ModuleType):
        return "a module"
    if inspect.isbuiltin(obj):
        return "a builtin function"
    if inspect.isclass(obj):
        return f"the class {obj.__module__}.{obj.__qualname__}"
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return "a function"
    return f"a {type(obj).__name__} object"


def _registered(obj: Any, registry: Registry) -> bool:
    node: Registry | None = registry
    while node is not None:
        if any(obj is value for value in node.module_dict.values()):
            return True
        node = node.parent
    return False


def belongs(obj: Any, registry: Registry) -> bool:
    """Whether ``obj`` may be named by a dotted path in ``registry`` under the default rule."""
    if _registered(obj, registry):
        return True
    members = registry.member_types
    return bool(members) and inspect.isclass(obj) and issubclass(obj, members)


def disallowed_message(key: str, obj: Any, registry: Registry, origin: str = "") -> str:
    """Why the dotted path ``key`` (at ``origin`` in a config, if known) is refused."""
    members = registry.member_types
    wanted = (
        "a subclass of " + " or ".join(f"{m.__module__}.{m.__qualname__}" for m in members)
        if members
        else "an object registered there (this registry declares no member types)"
    )
    where = f" ({origin})" if origin else ""
    return (
        f"{key}{where} names {_describe(obj)}, which does not belong in the "
        f"{registry.scope}::{registry.name} registry: a dotted type path must name {wanted}. "
        f"Nothing was called. To use it, {WIDEN_HINT}"
    )


def check_dotted_type(key: str, obj: Any, registry: Registry) -> Any:
    """Return ``obj`` (what the dotted path ``key`` resolved to) if the rule allows it."""
    if _allowed or belongs(obj, registry):
        return obj
    error = DisallowedTypeError(disallowed_message(key, obj, registry))
    error.refused = (key, obj, registry)  # lets a caller that knows the config key re-word it
    raise error
