"""Values of an ``optim_wrapper`` config that the optimizer rejects, named by their config key.

An optimizer's own checks say what is wrong (``Invalid learning rate: -1``, or torch's
``'<=' not supported between instances of 'float' and 'str'``) but not where: these helpers
find the config key (``optim_wrapper.optimizer.lr``, with the config file when it is known) and
put it into the message.
"""

from __future__ import annotations

import inspect
import numbers
import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from fastopt.config.config_dict import ConfigDict
from fastopt.config.errors import where

OPTIMIZER_PATH = "optim_wrapper.optimizer"
PARAMWISE_PATH = "optim_wrapper.paramwise_cfg"


def key_origin(cfg: Any, key: str, default_path: str) -> str:
    """``'config file a.py, key optim_wrapper.optimizer.lr'`` for ``cfg[key]``.

    The key path is the one ``cfg`` was loaded at (a ConfigDict from a file knows it), else
    ``default_path``; the file is named when it is known, and a value that an override
    (``--cfg-options``, i.e. ``Config.merge_from_dict``) set is said to be one.
    """
    if not isinstance(cfg, ConfigDict):
        return where(None, f"{default_path}.{key}")
    filename, path = cfg._key_source()
    origin = where(filename, f"{path or default_path}.{key}")
    return origin + (", set by --cfg-options" if cfg._overridden(key) else "")


def is_number(value: Any) -> bool:
    """A real number (not a bool), or a tensor (torch takes a tensor lr)."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)) or isinstance(
        value, torch.Tensor
    )


def check_fixed_lengths(
    optimizer_cls: Any,
    values: Iterable[tuple[Mapping[str, Any], Callable[[str], str]]],
    type_name: str,
) -> None:
    """A hyperparameter whose default is a tuple (``betas``, ``etas``) must have its length.

    ``values`` holds ``(arguments, key -> its origin)`` pairs: the optimizer config and the
    ``custom_keys`` options that reach the param groups. torch only fails
    at the first step (``too many values to unpack``) and a fused optimizer would read the first
    two of three betas, so a wrong length is refused here, before anything is built.
    """
    try:
        parameters = inspect.signature(optimizer_cls).parameters
    except (TypeError, ValueError):
        return
    fixed = {
        name: p.default
        for name, p in parameters.items()
        if isinstance(p.default, tuple) and p.default
    }
    for args, origin in values:
        for name, default in fixed.items():
            value = args.get(name)
            if isinstance(value, (list, tuple)) and len(value) != len(default):
                raise ValueError(
                    f"{type_name} takes {name} of {len(default)} values (default "
                    f"{default!r}), but got {name}={value!r} "
                    f"(in {origin(name)})"
                )


def _builds(optimizer_cls: Any, first_arg: str, args: Mapping[str, Any]) -> bool:
    """Whether ``optimizer_cls`` accepts ``args`` for a stand-in parameter."""
    stand_in = [torch.zeros(2, requires_grad=True)]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            optimizer_cls(**{first_arg: stand_in}, **args)
    except Exception:
        return False
    return True


def rejected_keys(optimizer_cls: Any, first_arg: str, args: Mapping[str, Any]) -> list[str]:
    """The keys of ``args`` without which (i.e. with their default) the optimizer builds.

    Empty when the optimizer builds with all of ``args`` for a stand-in parameter (the error
    then comes from the param groups), or when no single key is to blame.
    """
    if _builds(optimizer_cls, first_arg, args):
        return []
    return [
        key
        for key in args
        if _builds(optimizer_cls, first_arg, {k: v for k, v in args.items() if k != key})
    ]


def name_rejected_value(
    error: Exception, optimizer_cls: Any, first_arg: str, cfg: Mapping[str, Any], type_name: str
) -> Exception:
    """``error`` (an optimizer's TypeError/ValueError) again, naming the config key at fault."""
    args = {k: v for k, v in cfg.items() if k not in ("type", "_scope_", first_arg)}
    keys = rejected_keys(optimizer_cls, first_arg, args)
    if keys:
        values = ", ".join(f"{key}={args[key]!r}" for key in keys)
        origin = "; ".join(key_origin(cfg, key, OPTIMIZER_PATH) for key in keys)
        message = f"{type_name} rejects {values}: {error} (in {origin})"
    else:
        filename, path = cfg._key_source() if isinstance(cfg, ConfigDict) else (None, "")
        origin = where(filename, path or OPTIMIZER_PATH)
        message = f"{type_name} could not be built from its config: {error} (in {origin})"
    return type(error)(message)
