"""Config errors and warnings; messages name the config file and the key path."""

from __future__ import annotations


class ConfigKeyError(KeyError):
    """A KeyError (MMEngine's type) whose message prints without quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ConfigValueError(ValueError):
    """Config values that cannot work together; the message names the keys that clash."""


class LegacyConfigError(ValueError):
    """An MMCV 1.x config key that has no fastopt/MMEngine translation."""


class LegacyConfigWarning(UserWarning):
    """An MMCV 1.x config key was translated to its MMEngine equivalent."""


class LegacyConfigNote(LegacyConfigWarning):
    """MMCV 1.x keys left in an MMEngine config were left as they are (MMEngine ignores them)."""


def where(filename: str | None, key: str | None = None) -> str:
    """``"config file a.py, key optim_wrapper.clip_grad"`` (parts that are known)."""
    parts = []
    if filename:
        parts.append(f"config file {filename}")
    if key:
        parts.append(f"key {key}")
    return ", ".join(parts)
