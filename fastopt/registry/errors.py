"""Exceptions raised while registering or building, and how they describe a config's origin.

The KeyError subclasses keep MMEngine's exception types (code that catches ``KeyError`` still
works) but print their message as is: a plain ``KeyError`` wraps it in quotes.
"""

from __future__ import annotations

from typing import Any


class _MessageKeyError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class UnknownTypeError(_MessageKeyError):
    """A ``type`` name is not registered in the registry (nor its parents)."""


class DisallowedTypeError(UnknownTypeError):
    """A dotted ``type`` path names an object that does not belong in the registry.

    See :mod:`fastopt.registry.type_policy`. A subclass of :class:`UnknownTypeError`: code that
    handles "no such type" handles this too, and nothing named by the path was called.
    """


class MissingTypeError(_MessageKeyError):
    """A config to build has no ``type`` (and the default arguments do not give one)."""


class DuplicateRegistrationError(_MessageKeyError):
    """A name is registered twice without ``force=True``."""


class BuildArgumentError(TypeError):
    """A config's keywords do not fit the signature of the class or function it builds."""


def config_origin(cfg: Any, key: str | None = None) -> str:
    """Describe where ``cfg`` came from, e.g. ``"config file a.py, key optim_wrapper.optimizer"``.

    A ``ConfigDict`` loaded from a file knows its file and key path (``_key_source()``);
    ``key`` appends a sub-key such as ``"type"``. A ``key`` that an override set names
    ``--cfg-options`` instead of the file (``"--cfg-options optim_wrapper.optimizer.lrr"``).
    Returns ``""`` when the origin is unknown.
    """
    source = getattr(cfg, "_key_source", None)
    if not callable(source):
        return ""
    filename, path = source()
    if key:
        path = f"{path}.{key}" if path else key
        overridden = getattr(cfg, "_overridden", None)
        if callable(overridden) and overridden(key):
            return f"--cfg-options {path}"
    parts = []
    if filename:
        parts.append(f"config file {filename}")
    if path:
        parts.append(f"key {path}")
    return ", ".join(parts)
