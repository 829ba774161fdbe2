"""Functions that turn a config dict into an object, one per kind of registry."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    BuildArgumentError,
    DisallowedTypeError,
    MissingTypeError,
    UnknownTypeError,
    config_origin,
)
from .type_policy import disallowed_message

if TYPE_CHECKING:
    from .registry import Registry


def _as_args(cfg: Any) -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        return dict(cfg.items())
    raise TypeError(f"cfg should be a dict, ConfigDict or Config, but got {type(cfg)}")


def _with_origin(message: str, cfg: Any, key: str | None = None) -> str:
    origin = config_origin(cfg, key)
    return f"{message} (in {origin})" if origin else message


def unknown_type_message(
    type_name: str, registry: Registry, cfg: Any = None, key: str = "type"
) -> str:
    """'X is not in the fastopt::optimizer registry ... did you mean ...?' with the origin.

    ``cfg`` (a ConfigDict loaded from a file) and ``key`` locate the name in the config.
    """
    msg = f"{type_name} is not in the {registry.scope}::{registry.name} registry"
    origin = config_origin(cfg, key) if cfg is not None else ""
    if origin:
        msg += f" (in {origin})"
    msg += "."
    close = registry.closest_names(type_name)
    if close:
        msg += " Did you mean " + " or ".join(close) + "?"
    else:
        msg += (
            " Check the spelling, or that the module defining it is imported "
            "(e.g. custom_imports=dict(imports=['my_package.my_module']) in the config)."
        )
    missing = registry.missing_locations
    if missing:
        msg += " Note: could not import " + ", ".join(missing) + "."
    return msg


def check_registry(registry: Any) -> None:
    """Fail clearly when a build function gets something else than a :class:`Registry`."""
    from .registry import Registry

    if isinstance(registry, Registry):
        return
    if isinstance(registry, str):
        raise TypeError(
            f"registry must be a fastopt Registry, but got the str {registry!r}: pass the "
            f"registry object (e.g. fastopt.registry.MODELS); to build in the scope "
            f"{registry!r}, put _scope_={registry!r} in the config or use "
            f"REGISTRY.switch_scope_and_registry({registry!r})"
        )
    raise TypeError(f"registry must be a fastopt Registry, but got {type(registry)}")


def resolve_type(obj_type: Any, registry: Registry, cfg: Any = None, key: str = "type") -> Any:
    """The class or function named by ``cfg[key]`` (a registered name, a path or the object)."""
    check_registry(registry)
    if isinstance(obj_type, str):
        try:
            obj_cls = registry.get(obj_type)
        except DisallowedTypeError as e:
            origin = config_origin(cfg, key) if cfg is not None else ""
            refused = getattr(e, "refused", None)
            if not origin or refused is None:
                raise
            raise DisallowedTypeError(disallowed_message(*refused, origin)) from None
        if obj_cls is None:
            raise UnknownTypeError(unknown_type_message(obj_type, registry, cfg, key))
        return obj_cls
    if callable(obj_type):
        return obj_type
    raise TypeError(
        _with_origin(f"{key} must be a str or valid type, but got {type(obj_type)}", cfg, key)
    )


def _type_name(obj_cls: Any) -> str:
    return getattr(obj_cls, "__name__", None) or repr(obj_cls)


def _signature_problem(obj_cls: Any, args: dict[str, Any]) -> tuple[str, list[str]] | None:
    """Why ``obj_cls(**args)`` cannot bind and the unexpected keywords, or None if it binds
    (the error came from inside)."""
    try:
        sig = inspect.signature(obj_cls)
    except (TypeError, ValueError):
        return None
    try:
        sig.bind(**args)
    except TypeError as e:
        accepted = [
            p.name
            for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        ]
        unexpected = sorted(k for k in args if k not in sig.parameters)
        has_var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        if unexpected and not has_var_kw:
            what = "unexpected keyword " + ", ".join(repr(k) for k in unexpected)
        else:
            what = str(e)
        return f"{what}; it accepts: {', '.join(accepted)}", [] if has_var_kw else unexpected
    return None


def _is_manager_class(obj_cls: Any) -> bool:
    if not inspect.isclass(obj_cls):
        return False
    from fastopt.logging.manager import ManagerMixin  # deferred: fastopt.logging imports torch

    return issubclass(obj_cls, ManagerMixin)


def instantiate(obj_cls: Any, args: dict[str, Any], registry: Registry, cfg: Any = None) -> Any:
    """Call ``obj_cls(**args)``; a keyword that does not fit names the type and the keyword.

    A ``ManagerMixin`` subclass is built with ``get_instance(**args)`` (MMEngine's rule), so
    that its ``get_current_instance()`` finds the built object.
    """
    factory = obj_cls.get_instance if _is_manager_class(obj_cls) else obj_cls
    try:
        return factory(**args)
    except TypeError as e:
        found = _signature_problem(factory, args)
        if found is None:
            raise  # raised inside the constructor: propagate unchanged
        problem, unexpected = found
        message = (
            f"{_type_name(obj_cls)} (from the {registry.scope}::{registry.name} registry) "
            f"got {problem}"
        )
        # a keyword that --cfg-options gave is named there, not in the file
        overridden = getattr(cfg, "_overridden", None)
        key = next((k for k in unexpected if callable(overridden) and overridden(k)), None)
        raise BuildArgumentError(_with_origin(message, cfg, key)) from e


def _prepare(cfg: Any, default_args: Mapping[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    args = _as_args(cfg)
    if default_args is not None:
        if not isinstance(default_args, Mapping):
            raise TypeError(f"default_args should be a dict or None, but got {type(default_args)}")
        for key, value in default_args.items():
            args.setdefault(key, value)  # the config wins over default_args
    if "type" not in args:
        raise MissingTypeError(
            _with_origin(
                '`cfg` or `default_args` must contain the key "type", but got '
                f"{dict(cfg)}\n{default_args}",
                cfg,
            )
        )
    return args, args.pop("_scope_", None)


def build_from_cfg(
    cfg: Any, registry: Registry, default_args: Mapping[str, Any] | None = None
) -> Any:
    """Build ``registry[cfg['type']](**rest_of_cfg, **default_args)`` (MMEngine semantics).

    ``type`` may be a registered name, a full dotted path or a class/function; ``_scope_``
    switches the default scope while building.
    """
    check_registry(registry)
    args, scope = _prepare(cfg, default_args)
    with registry.switch_scope_and_registry(scope) as reg:
        obj_cls = resolve_type(args.pop("type"), reg, cfg)
        return instantiate(obj_cls, args, reg, cfg)


def build_optimizer_from_cfg(
    cfg: Any, registry: Registry, default_args: Mapping[str, Any] | None = None
) -> Any:
    """Build an optimizer (same as :func:`build_from_cfg`; kept as the OPTIMIZERS build hook).

    torch's ``Adafactor`` is registered as ``TorchAdafactor``; asking for ``'Adafactor'``
    fails with a message that suggests it.
    """
    return build_from_cfg(cfg, registry, default_args)


def build_scheduler_from_cfg(
    cfg: Any, registry: Registry, default_args: Mapping[str, Any] | None = None
) -> Any:
    """Build a parameter scheduler; ``convert_to_iter_based=True`` calls ``build_iter_from_epoch``.

    The Runner passes ``epoch_length`` in ``default_args``; it is only used for conversion.
    """
    check_registry(registry)
    args, scope = _prepare(cfg, default_args)
    with registry.switch_scope_and_registry(scope) as reg:
        convert = args.pop("convert_to_iter_based", False)
        obj_cls = resolve_type(args.pop("type"), reg, cfg)
        if convert:
            if "epoch_length" not in args or not args.get("by_epoch", True):
                raise AssertionError(
                    _with_origin(
                        "Only epoch-based parameter scheduler can be converted to iter-based, "
                        "and `epoch_length` should be set",
                        cfg,
                    )
                )
            return instantiate(obj_cls.build_iter_from_epoch, args, reg, cfg)
        args.pop("epoch_length", None)
        return instantiate(obj_cls, args, reg, cfg)


def build_model_from_cfg(
    cfg: Any, registry: Registry, default_args: Mapping[str, Any] | None = None
) -> Any:
    """Build a model; a list of configs becomes a ``torch.nn.Sequential`` of the built modules."""
    if isinstance(cfg, list):
        import torch

        return torch.nn.Sequential(*(build_from_cfg(c, registry, default_args) for c in cfg))
    return build_from_cfg(cfg, registry, default_args)


def build_runner_from_cfg(cfg: Any, registry: Registry) -> Any:
    """Build a runner with ``runner_cls.from_cfg(cfg)``; ``runner_type`` picks the class."""
    check_registry(registry)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"cfg should be a dict, ConfigDict or Config, but got {type(cfg)}")
    args = cfg.copy()  # keeps a Config a Config: the runner may want its filename
    scope = args.pop("_scope_", None)
    with registry.switch_scope_and_registry(scope) as reg:
        runner_cls = resolve_type(args.get("runner_type", "Runner"), reg, cfg)
        return runner_cls.from_cfg(args)
