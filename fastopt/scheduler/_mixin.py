"""Support for the ``*LR`` / ``*Momentum`` classes that fix ``param_name``."""

from __future__ import annotations

import inspect


def signature_without_param_name(cls: type) -> inspect.Signature:
    """The generic scheduler's signature minus ``param_name``.

    The mixins take ``*args, **kwargs``; publishing the real signature keeps ``help()`` and
    the registry's "unexpected keyword ... it accepts ..." errors precise.
    """
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        if "param_name" in params:
            kept = [p for name, p in params.items() if name not in ("self", "param_name")]
            return inspect.Signature(kept)
    return inspect.signature(cls)


def publish_signature(cls: type) -> None:
    """Set ``cls.__signature__`` (called from the mixins' ``__init_subclass__``)."""
    cls.__signature__ = signature_without_param_name(cls)  # type: ignore[attr-defined]
