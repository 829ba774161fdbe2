"""The runner's hooks: registered in priority order, called by name, printed per stage.

Order is MMEngine's: a hook goes after every hook of lower or equal priority value, so ties
keep registration order (the default hooks first, then the custom ones in config order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastopt.hooks import Hook
from fastopt.hooks.priority import get_priority, priority_name
from fastopt.registry import HOOKS

DEFAULT_HOOKS: dict[str, dict[str, Any]] = {
    "runtime_info": dict(type="RuntimeInfoHook"),
    "timer": dict(type="IterTimerHook"),
    "sampler_seed": dict(type="DistSamplerSeedHook"),
    "logger": dict(type="LoggerHook"),
    "param_scheduler": dict(type="ParamSchedulerHook"),
    "checkpoint": dict(type="CheckpointHook", interval=1),
}


class HookList:
    """Hooks in the order they run; ``hooks`` is the list itself (``runner.hooks``)."""

    def __init__(self) -> None:
        self.hooks: list[Hook] = []

    def register(self, hook: Hook | Mapping, priority: int | str | None = None) -> None:
        """Insert ``hook`` (an object or a ``HOOKS`` config) after every hook of lower or
        equal priority value.

        Priority: the ``priority`` argument, else the config's ``priority`` key, else the
        hook's own attribute.
        """
        if not isinstance(hook, (Hook, Mapping)):
            raise TypeError(f"hook should be an instance of Hook or dict, but got {hook}")
        cfg_priority = None
        if isinstance(hook, Mapping):
            cfg = hook.copy() if isinstance(hook, dict) else dict(hook)  # keeps a config's origin
            cfg_priority = cfg.pop("priority", None)
            hook_obj = HOOKS.build(cfg)
            if not isinstance(hook_obj, Hook):
                raise TypeError(f"{cfg.get('type')} built a {type(hook_obj).__name__}, not a Hook")
        else:
            hook_obj = hook
        if priority is not None:
            hook_obj.priority = priority
        elif cfg_priority is not None:
            hook_obj.priority = cfg_priority
        try:
            value = get_priority(hook_obj.priority)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{type(hook_obj).__name__}: {e}") from None
        for i in range(len(self.hooks) - 1, -1, -1):
            if value >= get_priority(self.hooks[i].priority):
                self.hooks.insert(i + 1, hook_obj)
                return
        self.hooks.insert(0, hook_obj)

    def register_defaults(self, hooks: Mapping[str, Hook | dict | None] | None = None) -> None:
        """Register :data:`DEFAULT_HOOKS`, replaced (or removed with None) by ``hooks``."""
        merged: dict[str, Any] = {name: dict(cfg) for name, cfg in DEFAULT_HOOKS.items()}
        if hooks is not None:
            if not isinstance(hooks, Mapping):
                raise TypeError(f"default_hooks should be a dict, but got {type(hooks).__name__}")
            for name, hook in hooks.items():
                merged[name] = hook  # None removes (or disables a new name)
        for hook in merged.values():
            if hook is not None:
                self.register(hook)

    def register_custom(self, hooks: list[Hook | dict]) -> None:
        """Register each of ``hooks`` (in order)."""
        if not isinstance(hooks, (list, tuple)):
            raise TypeError(f"custom_hooks should be a list, but got {type(hooks).__name__}")
        for hook in hooks:
            self.register(hook)

    def call(self, runner: Any, fn_name: str, **kwargs: Any) -> None:
        """Call ``fn_name(runner, **kwargs)`` on every hook that has it, in priority order."""
        for hook in self.hooks:
            method = getattr(hook, fn_name, None)
            if method is None:
                continue
            try:
                method(runner, **kwargs)
            except TypeError as e:
                raise TypeError(f"{e} in {hook}") from e

    def info(self) -> str:
        """The hook order per stage, in MMEngine's format."""
        stage_hooks: dict[str, list[str]] = {stage: [] for stage in Hook.stages}
        for hook in self.hooks:
            name = priority_name(hook.priority)
            line = f"({name:<12}) {type(hook).__name__:<35}"
            for stage in hook.get_triggered_stages():
                stage_hooks.setdefault(stage, []).append(line)
        blocks = []
        for stage in Hook.stages:
            lines = stage_hooks[stage]
            if lines:
                blocks.append(f"{stage}:\n" + "\n".join(lines) + "\n -------------------- ")
        return "\n".join(blocks)
