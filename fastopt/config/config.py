"""``Config``: a config file (or dict) with attribute access, overrides, dump and pretty text."""

from __future__ import annotations

import argparse
import copy
import difflib
import importlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from .config_dict import ConfigDict, to_plain
from .errors import where
from .loader import _BASE_REF, _ENV, _PREDEFINED, SUFFIXES, YamlDumper, file_to_dict
from .merge import merge_a_into_b
from .options import add_args, check_override_paths
from .pretty import format_config

RESERVED_KEYS = ("filename", "text", "pretty_text", "env_variables")

# A dumped string value such as '{{ fileDirname }}' or '{{$HOME:x}}' would be substituted when
# the file is loaded again, so the dump escapes the first brace of every text the loader
# substitutes: the file then loads back to an equal config. The escape is one of the string
# literal (Python and YAML double quotes: \x7b; JSON: \u007b); such text only occurs inside
# string literals, since '{{' cannot start a dict literal in any of the three formats.
SUBSTITUTION_PATTERNS = (_PREDEFINED, _ENV, _BASE_REF)
PY_BRACE = "\\x7b"
JSON_BRACE = "\\u007b"


def escape_substitutions(text: str, brace: str) -> str:
    """``text`` with the first ``{`` of each substitution the loader would make replaced."""
    for pattern in SUBSTITUTION_PATTERNS:  # the loader's own patterns, in its order
        text = pattern.sub(lambda m: brace + m.group(0)[1:], text)
    return text


class _DumpDumper(YamlDumper):
    """Writes strings that hold ``{{`` double-quoted, where backslash escapes work."""


_DumpDumper.add_representer(
    str,
    lambda dumper, data: dumper.represent_scalar(
        "tag:yaml.org,2002:str", data, style='"' if "{{" in data else None
    ),
)


def import_modules_from_strings(
    imports: str | list[str] | None, allow_failed_imports: bool = False
) -> list[Any] | Any | None:
    """Import modules by name (``custom_imports``); classes register as a side effect."""
    if not imports:
        return None
    single = isinstance(imports, str)
    names = [imports] if single else imports
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise TypeError(f"custom_imports must be a str or a list of str, but got {imports!r}")
    modules = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            if not allow_failed_imports:
                raise
            warnings.warn(f"{name} failed to import and is ignored.", UserWarning, stacklevel=2)
            module = None
        modules.append(module)
    return modules[0] if single else modules


def _mark_overridden(parent: Any, key: str, value: Any) -> None:
    """Remember that an override set ``parent[key]`` (and each key of a dict ``value``)."""
    if not isinstance(parent, ConfigDict):
        return  # a list element: error messages name the list's key
    parent._mark_overridden(key)
    if isinstance(value, Mapping):
        for sub_key, sub_value in value.items():
            _mark_overridden(parent.get(key), sub_key, sub_value)


class Config(MutableMapping):
    """A config: nested dicts with attribute access, loaded from ``.py``/``.json``/``.yaml``.

    ``Config.fromfile(path)`` follows MMEngine (``_base_``, ``_delete_``, ``{{_base_.x}}``,
    ``{{$ENV:default}}``, predefined variables, ``custom_imports``) and translates MMCV 1.x
    keys (``optimizer_config``, ``lr_config``, ...) with a warning per translated key.
    """

    def __init__(
        self,
        cfg_dict: Mapping[str, Any] | None = None,
        cfg_text: str | None = None,
        filename: str | os.PathLike | None = None,
        env_variables: dict[str, str] | None = None,
    ) -> None:
        if cfg_dict is None:
            cfg_dict = {}
        elif not isinstance(cfg_dict, Mapping):
            raise TypeError(f"cfg_dict must be a dict, but got {type(cfg_dict)}")
        for key in cfg_dict:
            if key in RESERVED_KEYS:
                raise KeyError(f"{key} is reserved for config file")
        filename = str(filename) if filename is not None else None
        cfg = ConfigDict(cfg_dict)
        cfg._set_source(filename)
        object.__setattr__(self, "_cfg_dict", cfg)
        object.__setattr__(self, "_filename", filename)
        if cfg_text is None:
            cfg_text = Path(filename).read_text(encoding="utf-8") if filename else ""
        object.__setattr__(self, "_text", cfg_text)
        object.__setattr__(self, "_env_variables", dict(env_variables or {}))

    # ---------------------------------------------------------------- loading
    @staticmethod
    def fromfile(
        filename: str | os.PathLike,
        use_predefined_variables: bool = True,
        import_custom_modules: bool = True,
        use_environment_variables: bool = True,
        translate_legacy: bool = True,
    ) -> Config:
        """Load a config file and its ``_base_`` chain.

        ``translate_legacy`` turns MMCV 1.x keys into their MMEngine equivalents
        (see :mod:`fastopt.config.legacy`).
        """
        filename = os.path.abspath(os.path.expanduser(str(filename)))
        cfg_dict, cfg_text, env_variables = file_to_dict(
            filename, use_predefined_variables, use_environment_variables
        )
        if translate_legacy:
            from .legacy import translate_legacy_config

            cfg_dict = translate_legacy_config(cfg_dict, filename)
        if import_custom_modules and cfg_dict.get("custom_imports"):
            Config._import_custom_modules(cfg_dict["custom_imports"], filename)
        return Config(cfg_dict, cfg_text=cfg_text, filename=filename, env_variables=env_variables)

    @staticmethod
    def fromstring(cfg_str: str, file_format: str) -> Config:
        """Load a config from text; ``file_format`` is ``'.py'``, ``'.json'``, ``'.yaml'``..."""
        if file_format not in SUFFIXES:
            raise OSError("Only py/yml/yaml/json type are supported now!")
        if file_format != ".py" and "dict(" in cfg_str:
            warnings.warn('Please check "file_format", the file format may be .py', stacklevel=2)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"config{file_format}")
            Path(path).write_text(cfg_str, encoding="utf-8")
            cfg = Config.fromfile(path)
        object.__setattr__(cfg, "_filename", None)
        object.__setattr__(cfg, "_text", cfg_str)
        cfg._cfg_dict._set_source(None)
        return cfg

    @staticmethod
    def _import_custom_modules(custom_imports: Any, filename: str | None) -> None:
        if isinstance(custom_imports, Mapping):
            kwargs = dict(custom_imports)
        else:
            kwargs = {"imports": custom_imports}
        unknown = set(kwargs) - {"imports", "allow_failed_imports"}
        if unknown:
            raise TypeError(
                f"custom_imports accepts `imports` and `allow_failed_imports`, but got "
                f"{sorted(unknown)} ({where(filename, 'custom_imports')})"
            )
        try:
            import_modules_from_strings(**kwargs)
        except ImportError as e:
            paths = "\n".join(f"    {p}" for p in sys.path)
            raise ImportError(
                f"Failed to import custom modules from {kwargs} ({where(filename, 'custom_imports')}): "
                f"{e}\nthe current sys.path is:\n{paths}\nYou should set `PYTHONPATH` to make "
                "`sys.path` include the directory which contains your custom module"
            ) from e

    # ---------------------------------------------------------------- properties
    @property
    def filename(self) -> str | None:
        return self._filename

    @property
    def text(self) -> str:
        return self._text

    @property
    def env_variables(self) -> dict[str, str]:
        return dict(self._env_variables)

    @property
    def pretty_text(self) -> str:
        """The config as formatted Python source (loads back to an equal config)."""
        return escape_substitutions(format_config(self._cfg_dict), PY_BRACE)

    def to_dict(self) -> dict:
        """A plain nested ``dict`` copy."""
        return to_plain(self._cfg_dict)

    # ---------------------------------------------------------------- overrides
    def merge_from_dict(self, options: Mapping[str, Any], allow_list_keys: bool = True) -> None:
        """Merge ``{'a.b.c': value}`` overrides (e.g. from ``--cfg-options``) into the config.

        Dotted keys become nested dicts merged like a child config; with ``allow_list_keys``
        a numeric component indexes a list (``'pipeline.1.scale'``).
        """
        check_override_paths(self._cfg_dict, options if allow_list_keys else {})
        nested: dict[str, Any] = {}
        for full_key, value in options.items():
            d = nested
            parts = full_key.split(".")
            for part in parts[:-1]:
                d = d.setdefault(part, {})
                if not isinstance(d, dict):
                    raise KeyError(f"conflicting overrides for {full_key!r}")
            d[parts[-1]] = copy.deepcopy(value)
        merged = merge_a_into_b(
            nested, self._cfg_dict, allow_list_keys=allow_list_keys, filename=self._filename
        )
        merged = ConfigDict(merged)
        merged._set_source(self._filename)
        for full_key, value in options.items():
            *parents, last = full_key.split(".")
            parent: Any = merged
            for part in parents:
                parent = parent[int(part)] if isinstance(parent, list) else parent[part]
            _mark_overridden(parent, last, value)
        object.__setattr__(self, "_cfg_dict", merged)

    # ---------------------------------------------------------------- tools
    @staticmethod
    def diff(cfg1: str | os.PathLike | Config, cfg2: str | os.PathLike | Config) -> str:
        """A unified diff of two configs (or config files) as written by ``pretty_text``.

        MMEngine's ``Config.diff``, as plain text; the ``---``/``+++`` lines name the files.
        Empty when the configs are equal.
        """
        a, b = (c if isinstance(c, Config) else Config.fromfile(c) for c in (cfg1, cfg2))
        lines = difflib.unified_diff(
            a.pretty_text.split("\n"),
            b.pretty_text.split("\n"),
            fromfile=a.filename or "",
            tofile=b.filename or "",
            lineterm="",
        )
        text = "\n".join(lines)
        return text + "\n" if text else ""

    @staticmethod
    def auto_argparser(
        description: str | None = None, args: Sequence[str] | None = None
    ) -> tuple[argparse.ArgumentParser, Config]:
        """A parser with the config file and an option per config value, and the config.

        As MMEngine's: the config file is the first positional argument of ``args``
        (``sys.argv[1:]`` by default); every scalar ``a.b`` of it becomes ``--a.b`` (see
        :func:`fastopt.config.options.add_args`).
        """
        partial = argparse.ArgumentParser(description=description, add_help=False)
        partial.add_argument("config")
        cfg = Config.fromfile(partial.parse_known_args(args)[0].config)
        parser = argparse.ArgumentParser(description=description)
        parser.add_argument("config", help="config file path")
        add_args(parser, cfg)
        return parser, cfg

    # ---------------------------------------------------------------- dump
    def dump(self, file: str | os.PathLike | None = None) -> str | None:
        """Write the config to ``file`` (format from its suffix); return the text if no file.

        Without a file the format follows the config's own file (Python when unknown).
        JSON has no tuples: they load back as lists.
        """
        suffix = Path(str(file if file is not None else self._filename or "x.py")).suffix
        if suffix == ".py":
            text = self.pretty_text
        elif suffix == ".json":
            text = json.dumps(self.to_dict(), indent=4) + "\n"
            text = escape_substitutions(text, JSON_BRACE)
        elif suffix in (".yaml", ".yml"):
            # no line folding: a folded string could split what escape_substitutions looks for
            text = yaml.dump(self.to_dict(), Dumper=_DumpDumper, sort_keys=False, width=2**30)
            text = escape_substitutions(text, PY_BRACE)  # YAML double quotes know \x7b
        else:
            raise OSError("Only py/yml/yaml/json type are supported now!")
        if file is None:
            return text
        Path(file).write_text(text, encoding="utf-8")
        return None

    # ---------------------------------------------------------------- mapping protocol
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_cfg_dict", "_filename", "_text", "_env_variables"):
            raise AttributeError(name)
        return getattr(self._cfg_dict, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._cfg_dict[name] = value

    def __delattr__(self, name: str) -> None:
        delattr(self._cfg_dict, name)

    def __getitem__(self, key: str) -> Any:
        return self._cfg_dict[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._cfg_dict[key] = value

    def __delitem__(self, key: str) -> None:
        del self._cfg_dict[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._cfg_dict)

    def __len__(self) -> int:
        return len(self._cfg_dict)

    def __contains__(self, key: object) -> bool:
        return key in self._cfg_dict

    def copy(self) -> Config:
        """A shallow copy (values shared), as ``copy.copy``."""
        return Config._wrap(self._cfg_dict.copy(), self)

    def __copy__(self) -> Config:
        return self.copy()

    def __deepcopy__(self, memo: dict[int, Any]) -> Config:
        return Config._wrap(copy.deepcopy(self._cfg_dict, memo), self)

    @staticmethod
    def _wrap(cfg_dict: ConfigDict, like: Config) -> Config:
        new = object.__new__(Config)
        object.__setattr__(new, "_cfg_dict", cfg_dict)
        object.__setattr__(new, "_filename", like._filename)
        object.__setattr__(new, "_text", like._text)
        object.__setattr__(new, "_env_variables", dict(like._env_variables))
        return new

    def __getstate__(self) -> tuple:
        return (self._cfg_dict, self._filename, self._text, self._env_variables)

    def __setstate__(self, state: tuple) -> None:
        for name, value in zip(("_cfg_dict", "_filename", "_text", "_env_variables"), state):
            object.__setattr__(self, name, value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Config):
            return self._cfg_dict == other._cfg_dict
        return isinstance(other, Mapping) and self._cfg_dict == dict(other)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Config (path: {self._filename}): {dict.__repr__(self._cfg_dict)}"
