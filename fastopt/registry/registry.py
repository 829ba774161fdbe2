"""``Registry``: maps ``type`` names in configs to classes and functions (MMEngine semantics).

A registry has a ``scope`` (the package that defines it), an optional ``parent`` (lookups
without a scope prefix fall back to the ancestors) and ``locations``: modules imported the first
time the registry is searched, so classes that register themselves with a decorator are found
without the user importing them first.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import warnings
from collections.abc import Generator, Iterable, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Callable

from .build_functions import build_from_cfg
from .default_scope import DefaultScope
from .errors import DisallowedTypeError, DuplicateRegistrationError
from .type_policy import check_dotted_type


def import_if_exists(name: str) -> ModuleType | None:
    """Import module ``name``; None if it (or a package above it) does not exist.

    An ImportError raised *inside* an existing module is a real bug there and propagates.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing and (name == missing or name.startswith(missing + ".")):
            return None
        raise


def get_object_from_string(path: str) -> Any:
    """The object at a dotted path such as ``'torch.optim.SGD'`` (MMEngine's helper); None if
    there is none. A path of modules only (``'torch.optim'``) gives the module.

    Packages are imported part by part; an attribute that is not a module wins over a
    submodule of the same name (``mmcv.ops.nms`` is the function). This resolves anything:
    registries check the result with :func:`fastopt.registry.type_policy.check_dotted_type`.
    """
    parts = path.split(".")
    module = import_if_exists(parts[0])
    if module is None:
        return None
    i = 1
    while i < len(parts):
        attr = getattr(module, parts[i], None)
        if attr is not None and not isinstance(attr, ModuleType):
            break
        sub = import_if_exists(".".join(parts[: i + 1]))
        if sub is None:
            if attr is None:
                return None
            sub = attr  # a module reachable only as an attribute
        module = sub
        i += 1
    obj: Any = module
    for part in parts[i:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


class Registry:
    """A name → class/function mapping with scopes, parents and lazily imported locations.

    Args:
        name: what it holds, e.g. ``'optimizer'`` (used in messages).
        build_func: builds an object from a config; default: the parent's, else
            :func:`~fastopt.registry.build_from_cfg`.
        parent: registry consulted for names this one lacks.
        scope: the package the registry belongs to; inferred from the caller's module.
        locations: modules imported on the first lookup so that their classes register.
        member_types: the classes (or their dotted paths) whose subclasses belong here; a
            dotted ``type`` path may name only those or a registered object (see
            :mod:`fastopt.registry.type_policy`). Default: the parent's.
    """

    def __init__(
        self,
        name: str,
        build_func: Callable[..., Any] | None = None,
        parent: Registry | None = None,
        scope: str | None = None,
        locations: Sequence[str] = (),
        *,
        member_types: Sequence[type | str] | None = None,
    ) -> None:
        self._name = name
        self._member_types_cfg = None if member_types is None else tuple(member_types)
        self._member_types: tuple[type, ...] | None = None
        self._module_dict: dict[str, Any] = {}
        self._children: dict[str, Registry] = {}
        self._locations = list(locations)
        self._imported = False
        self._missing_locations: list[str] = []

        if scope is not None:
            if not isinstance(scope, str):
                raise TypeError(f"scope must be a str, but got {type(scope)}")
            self._scope = scope
        else:
            self._scope = self.infer_scope()

        self.parent: Registry | None = None
        if parent is not None:
            if not isinstance(parent, Registry):
                raise TypeError(f"parent must be a Registry, but got {type(parent)}")
            parent._add_child(self)
            self.parent = parent

        # build_func priority: argument > parent's > build_from_cfg
        if build_func is None:
            self.build_func = self.parent.build_func if self.parent is not None else build_from_cfg
        else:
            self.build_func = build_func

    # ------------------------------------------------------------------ introspection
    @staticmethod
    def infer_scope() -> str:
        """The top-level package of the module that called ``Registry(...)``."""
        frame = inspect.currentframe()
        # infer_scope <- __init__ <- caller
        caller = frame.f_back.f_back if frame and frame.f_back else None
        module = inspect.getmodule(caller) if caller is not None else None
        if module is None:
            warnings.warn(
                'Cannot infer the scope of a registry; set "scope" explicitly. Using "fastopt".',
                stacklevel=3,
            )
            return "fastopt"
        return module.__name__.split(".")[0]

    @staticmethod
    def split_scope_key(key: str) -> tuple[str | None, str]:
        """``'mmdet.ResNet'`` → ``('mmdet', 'ResNet')``; ``'ResNet'`` → ``(None, 'ResNet')``."""
        scope, sep, rest = key.partition(".")
        return (scope, rest) if sep else (None, key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def scope(self) -> str:
        return self._scope

    @property
    def member_types(self) -> tuple[type, ...]:
        """Classes whose subclasses belong here (inherited from the parent when not given)."""
        if self._member_types is None:
            if self._member_types_cfg is None:
                return self.parent.member_types if self.parent is not None else ()
            resolved = []
            for item in self._member_types_cfg:
                cls = get_object_from_string(item) if isinstance(item, str) else item
                if not inspect.isclass(cls):
                    raise TypeError(
                        f"member type {item!r} of the {self._name} registry is not a class"
                    )
                resolved.append(cls)
            self._member_types = tuple(resolved)
        return self._member_types

    @property
    def module_dict(self) -> dict[str, Any]:
        return self._module_dict

    @property
    def children(self) -> dict[str, Registry]:
        return self._children

    @property
    def root(self) -> Registry:
        return self._get_root_registry()

    def __len__(self) -> int:
        return len(self._module_dict)

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        try:
            return self.get(key) is not None
        except DisallowedTypeError:
            return False

    def __repr__(self) -> str:
        names = ", ".join(sorted(self._module_dict))
        return f"Registry(name={self._name!r}, scope={self._scope!r}, items=[{names}])"

    def registered_names(self, with_parents: bool = True) -> list[str]:
        """Names registered here (and in the ancestors), after importing the locations."""
        self.import_from_location()
        names = set(self._module_dict)
        parent = self.parent
        while with_parents and parent is not None:
            parent.import_from_location()
            names.update(parent._module_dict)
            parent = parent.parent
        return sorted(names)

    def closest_names(self, key: str, n: int = 3) -> list[str]:
        """Registered names that look like ``key`` (for 'did you mean ...?' messages)."""
        names = self.registered_names()
        lowered = {name.lower(): name for name in names}
        found: list[str] = []
        if key.lower() in lowered:
            found.append(lowered[key.lower()])
        for match in difflib.get_close_matches(key.lower(), list(lowered), n=n, cutoff=0.6):
            if lowered[match] not in found:
                found.append(lowered[match])
        # a suffix/prefix hit such as 'Adafactor' -> 'TorchAdafactor'
        for name in names:
            if len(found) >= n:
                break
            if len(key) >= 4 and key.lower() in name.lower() and name not in found:
                found.append(name)
        return found[:n]

    @property
    def missing_locations(self) -> list[str]:
        """Location modules that could not be found when the registry was first searched."""
        return list(self._missing_locations)

    # ------------------------------------------------------------------ tree
    def _get_root_registry(self) -> Registry:
        root = self
        while root.parent is not None:
            root = root.parent
        return root

    def _search_child(self, scope: str) -> Registry | None:
        """Depth-first search of this registry's subtree for the registry of ``scope``."""
        if self._scope == scope:
            return self
        for child in self._children.values():
            found = child._search_child(scope)
            if found is not None:
                return found
        return None

    def _add_child(self, registry: Registry) -> None:
        if not isinstance(registry, Registry):
            raise TypeError(f"child must be a Registry, but got {type(registry)}")
        if registry.scope is None:
            raise ValueError("a child registry needs a scope")
        if registry.scope in self._children:
            raise AssertionError(
                f"scope {registry.scope} exists in {self.name} registry"
            )  # same exception type as MMEngine
        self._children[registry.scope] = registry

    @contextmanager
    def switch_scope_and_registry(self, scope: str | None) -> Generator[Registry, None, None]:
        """Yield the registry that lookups should use under the (possibly given) default scope.

        With a default scope set (by a Runner, or ``scope`` here), the registry of that scope
        in this registry's tree is used, so ``'ResNet'`` resolves in e.g. mmdet's child first.
        """
        with DefaultScope.overwrite_default_scope(scope):
            default_scope = DefaultScope.get_current_instance()
            registry = self
            if default_scope is not None:
                scope_name = default_scope.scope_name
                import_if_exists(f"{scope_name}.registry")
                found = self._get_root_registry()._search_child(scope_name)
                if found is None:
                    warnings.warn(
                        f'Failed to search registry with scope "{scope_name}" in the '
                        f'"{self.name}" registry tree; the registry of scope "{self.scope}" '
                        "is used instead.",
                        stacklevel=3,
                    )
                else:
                    registry = found
            yield registry

    # ------------------------------------------------------------------ lookup
    def import_from_location(self) -> None:
        """Import the ``locations`` once; a location that does not exist is skipped."""
        if self._imported:
            return
        missing = []
        for location in self._locations:
            # An ImportError from inside an existing module propagates, and the next lookup
            # retries (so the error is not replaced by a confusing "not registered").
            if import_if_exists(location) is None:
                missing.append(location)
        self._missing_locations = missing
        self._imported = True
        for location in missing:
            warnings.warn(
                f"Failed to import {location} (listed in the locations of the "
                f"{self._scope}::{self._name} registry): no such module.",
                stacklevel=3,
            )

    def get(self, key: str) -> Any:
        """The object registered as ``key``; None when not found.

        ``key`` may carry a scope (``'mmdet.ResNet'``) or be a full dotted import path
        (``'torch.optim.SGD'``). Without a scope the ancestors are searched too. A dotted path
        that resolves to an object which does not belong here raises
        :class:`~fastopt.registry.DisallowedTypeError` (see
        :mod:`fastopt.registry.type_policy`; under ``allow_dotted_types()`` any object, modules
        included, is returned as in MMEngine).
        """
        if not isinstance(key, str):
            raise TypeError(f"The key argument of `Registry.get` must be a str, got {type(key)}")
        scope, real_key = self.split_scope_key(key)
        self.import_from_location()
        obj = None
        if scope is None or scope == self._scope:
            if real_key in self._module_dict:
                obj = self._module_dict[real_key]
            elif scope is None:
                parent = self.parent
                while parent is not None:
                    parent.import_from_location()
                    if real_key in parent._module_dict:
                        obj = parent._module_dict[real_key]
                        break
                    parent = parent.parent
        else:
            # importing '<scope>.registry' lets a package attach its child registries
            import_if_exists(f"{scope}.registry")
            if scope in self._children:
                obj = self._children[scope].get(real_key)
            else:
                root = self._get_root_registry()
                # only recurse when the scope is known, otherwise root.get loops forever
                if root is not self and (scope == root._scope or scope in root._children):
                    obj = root.get(key)
        if obj is None and "." in key:
            try:
                obj = get_object_from_string(key)
            except Exception as e:  # noqa: BLE001 - MMEngine wraps any failure the same way
                raise RuntimeError(f"Failed to get {key}") from e
            if obj is not None:
                obj = check_dotted_type(key, obj, self)
        return obj

    # ------------------------------------------------------------------ build
    def build(self, cfg: Any, *args: Any, **kwargs: Any) -> Any:
        """Build an object from ``cfg`` (a dict with ``type``) with this registry's build_func."""
        return self.build_func(cfg, *args, **kwargs, registry=self)

    # ------------------------------------------------------------------ register
    def _register_module(
        self, module: Any, module_name: str | Iterable[str] | None = None, force: bool = False
    ) -> None:
        if not callable(module):
            raise TypeError(f"module must be Callable, but got {type(module)}")
        if module_name is None:
            module_name = module.__name__
        names = [module_name] if isinstance(module_name, str) else list(module_name)
        for name in names:
            if not force and name in self._module_dict:
                existed = self._module_dict[name]
                raise DuplicateRegistrationError(
                    f"{name} is already registered in {self.name} at "
                    f"{getattr(existed, '__module__', '?')}"
                )
            self._module_dict[name] = module

    def register_module(
        self,
        name: str | Sequence[str] | None = None,
        force: bool = False,
        module: Any = None,
    ) -> Any:
        """Register a class or function, as a decorator or directly with ``module=``.

        ``name`` defaults to ``module.__name__``; a list registers aliases. ``force=True``
        overrides an existing entry instead of raising ``KeyError``.
        """
        if not isinstance(force, bool):
            raise TypeError(f"force must be a boolean, but got {type(force)}")
        if not (
            name is None
            or isinstance(name, str)
            or (
                isinstance(name, Sequence)
                and not isinstance(name, str)
                and all(isinstance(n, str) for n in name)
            )
        ):
            raise TypeError(
                f"name must be None, an instance of str, or a sequence of str, but got {type(name)}"
            )
        if module is not None:
            self._register_module(module=module, module_name=name, force=force)
            return module

        def _register(module: Any) -> Any:
            self._register_module(module=module, module_name=name, force=force)
            return module

        return _register
