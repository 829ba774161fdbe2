"""Read one config file and its ``_base_`` chain into a dict (MMEngine's ``Config._file2dict``).

Steps for each file, in MMEngine's order: text substitution of predefined variables
(``{{ fileDirname }}`` ...), of environment variables (``{{$NAME:default}}``) and of base
references (``{{_base_.a.b}}`` → a placeholder string); load the bases recursively (a key may
be defined by only one base; the dicts a ``pkg::`` base brings get ``_scope_='pkg'``); evaluate
the file (``.py``: executed with ``_base_`` bound to the merged bases; ``.json``/``.yaml``:
parsed); replace the placeholders by the referenced (copied) base values; merge the file into
its bases.
"""

from __future__ import annotations

import ast
import copy
import importlib.util
import json
import os
import re
import types
import uuid
import warnings
from pathlib import Path
from typing import Any

import yaml

from . import shipped
from .config_dict import ConfigDict
from .errors import ConfigKeyError, where
from .merge import merge_a_into_b

BASE_KEY = "_base_"
SCOPE_KEY = "_scope_"
DEPRECATION_KEY = "_deprecation_"
SUFFIXES = (".py", ".json", ".yaml", ".yml")

_PREDEFINED = re.compile(
    r"\{\{\s*(fileDirname|fileBasename|fileBasenameNoExtension|fileExtname)\s*\}\}"
)
_ENV = re.compile(r"\{\{['\"]?\s*\$(\w+)\s*:\s*(.*?)\s*['\"]?\}\}")
_BASE_REF = re.compile(r"\{\{\s*" + BASE_KEY + r"\.([\w\.]+)\s*\}\}")


# ------------------------------------------------------------------------------- YAML
class _YamlLoader(yaml.SafeLoader):
    """SafeLoader that also reads the ``!!python/tuple`` tag (so tuples round-trip)."""


_YamlLoader.add_constructor(
    "tag:yaml.org,2002:python/tuple",
    lambda loader, node: tuple(loader.construct_sequence(node)),
)


class YamlDumper(yaml.SafeDumper):
    """SafeDumper that writes tuples with ``!!python/tuple`` and ConfigDicts as mappings."""


YamlDumper.add_representer(
    tuple, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:python/tuple", data)
)
YamlDumper.add_representer(ConfigDict, lambda dumper, data: dumper.represent_dict(dict(data)))


def load_structured(text: str, suffix: str, filename: str) -> dict:
    """Parse JSON or YAML text into a dict."""
    try:
        data = json.loads(text) if suffix == ".json" else yaml.load(text, Loader=_YamlLoader)
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"cannot parse config file {filename}: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TypeError(f"config file {filename} must hold a mapping, but holds {type(data)}")
    return data


# ------------------------------------------------------------------------------- substitutions
def substitute_predefined(text: str, filename: str) -> str:
    """Replace ``{{ fileDirname }}`` etc. by values of the file they are written in."""
    path = Path(filename)
    values = {
        "fileDirname": str(path.parent),
        "fileBasename": path.name,
        "fileBasenameNoExtension": path.stem,
        "fileExtname": path.suffix,
    }
    return _PREDEFINED.sub(lambda m: values[m.group(1)].replace("\\", "/"), text)


def substitute_env(text: str, filename: str) -> tuple[str, dict[str, str]]:
    """Replace ``{{$NAME:default}}`` by the environment variable or the default."""
    used: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            used[name] = os.environ[name]
            return os.environ[name]
        if not default:
            raise ConfigKeyError(
                f"`{name}` cannot be found in `os.environ`. Please set `{name}` in environment "
                f"or give a default value ({where(filename)})."
            )
        return default

    return _ENV.sub(replace, text), used


def pre_substitute_base_refs(text: str) -> tuple[str, dict[str, str]]:
    """Replace each ``{{_base_.a.b}}`` by a unique string literal; return placeholder → 'a.b'."""
    placeholders: dict[str, str] = {}
    by_ref: dict[str, str] = {}

    def replace(match: re.Match) -> str:
        ref = match.group(1)
        if ref not in by_ref:
            by_ref[ref] = f"_{ref}_{uuid.uuid4().hex[:6]}"
            placeholders[by_ref[ref]] = ref
        return f'"{by_ref[ref]}"'

    return _BASE_REF.sub(replace, text), placeholders


def substitute_base_refs(
    cfg: Any, placeholders: dict[str, str], base: dict, filename: str, path: str = ""
) -> Any:
    """Replace placeholder strings (anywhere in dicts, lists, tuples) by the base values."""
    if isinstance(cfg, str) and cfg in placeholders:
        value: Any = base
        ref = placeholders[cfg]
        for part in ref.split("."):
            try:
                value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
            except (KeyError, IndexError, ValueError, TypeError):
                raise ConfigKeyError(
                    f"{{{{_base_.{ref}}}}} refers to a key that the base configs do not define "
                    f"({where(filename, path)})"
                ) from None
        return copy.deepcopy(value)
    if isinstance(cfg, dict):
        for key in list(cfg):
            sub = f"{path}.{key}" if path else str(key)
            cfg[key] = substitute_base_refs(cfg[key], placeholders, base, filename, sub)
        return cfg
    if isinstance(cfg, (list, tuple)):
        items = [
            substitute_base_refs(v, placeholders, base, filename, f"{path}.{i}")
            for i, v in enumerate(cfg)
        ]
        return type(cfg)(items) if isinstance(cfg, list) else tuple(items)
    return cfg


# ------------------------------------------------------------------------------- bases
def _base_paths_of_python(tree: ast.Module, filename: str) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.With):
            for item in node.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "read_base":
                    raise ValueError(
                        f"config file {filename} uses MMEngine's lazy-import style "
                        "(`with read_base():`), which fastopt does not support; use `_base_`."
                    )
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets
        ):
            try:
                return _as_list(ast.literal_eval(node.value), filename)
            except ValueError:
                raise ValueError(
                    f"`_base_` must be a string or a list of strings ({where(filename, '_base_')})"
                ) from None
    return []


def _as_list(bases: Any, filename: str) -> list[str]:
    if isinstance(bases, str):
        return [bases]
    if isinstance(bases, (list, tuple)) and all(isinstance(b, str) for b in bases):
        return list(bases)
    raise TypeError(
        f"`_base_` must be a string or a list of strings, but got {bases!r} "
        f"({where(filename, '_base_')})"
    )


def resolve_base_path(base: str, filename: str) -> str:
    """A base path relative to the including file, or ``'pkg::path'`` in an installed package."""
    if "::" in base:
        package, _, rel = base.partition("::")
        if package == shipped.PACKAGE:  # installed, or the checkout's configs/ folder
            found = shipped.shipped_path(base)
            if found is None:
                raise FileNotFoundError(
                    f"base config {base!r} is not a config shipped with fastopt "
                    f"({where(filename, '_base_')})"
                )
            return str(found)
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(
                f"base config {base!r}: package {package!r} is not installed ({where(filename, '_base_')})"
            )
        root = Path(next(iter(spec.submodule_search_locations)))
        for candidate in (root / ".mim" / "configs" / rel, root / "configs" / rel):
            if candidate.is_file():
                return str(candidate)
        raise FileNotFoundError(
            f"base config {base!r} not found in package {package!r} ({where(filename, '_base_')})"
        )
    path = Path(base).expanduser()
    if not path.is_absolute():
        path = Path(filename).parent / path
    path = Path(os.path.normpath(path))
    if not path.is_file():
        raise FileNotFoundError(
            f"base config {str(path)!r} not found ({where(filename, '_base_')})"
        )
    return str(path)


def add_scope(cfg: Any, scope: str, has_scope: bool = True) -> Any:
    """Give the dicts of a ``pkg::`` base MMEngine's ``_scope_='pkg'`` (so that their ``type``
    names resolve in that package's registries).

    As MMEngine's ``Config._dict_to_config_dict``: only the outermost dicts with a ``type`` get
    it (not the dicts nested in them), and a ``_scope_`` already set is kept.
    """
    if isinstance(cfg, dict):
        if has_scope and "type" in cfg:
            has_scope = False
            if cfg.get(SCOPE_KEY) is None:
                cfg[SCOPE_KEY] = scope
        for key, value in cfg.items():
            cfg[key] = add_scope(value, scope, has_scope)
    elif isinstance(cfg, (list, tuple)):
        items = [add_scope(item, scope, has_scope) for item in cfg]
        return items if isinstance(cfg, list) else tuple(items)
    return cfg


class _RemoveBaseAssign(ast.NodeTransformer):
    """Drop ``_base_ = ...`` so that ``_base_`` stays bound to the merged base dict."""

    def visit_Assign(self, node: ast.Assign) -> ast.AST | None:
        if any(isinstance(t, ast.Name) and t.id == BASE_KEY for t in node.targets):
            return None
        return node


# ------------------------------------------------------------------------------- one file
def file_to_dict(
    filename: str,
    use_predefined_variables: bool = True,
    use_environment_variables: bool = True,
    _chain: tuple[str, ...] = (),
) -> tuple[dict, str, dict[str, str]]:
    """Load ``filename`` with its bases: (merged dict, concatenated source text, env vars used)."""
    filename = os.path.abspath(os.path.expanduser(filename))
    suffix = Path(filename).suffix
    if suffix not in SUFFIXES:
        raise OSError("Only py/yml/yaml/json type are supported now!")
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"config file {filename} not found")
    if filename in _chain:
        cycle = " -> ".join([*_chain, filename])
        raise RecursionError(f"config files include each other: {cycle}")

    with open(filename, encoding="utf-8") as f:
        original = f.read()
    text = substitute_predefined(original, filename) if use_predefined_variables else original
    env_variables: dict[str, str] = {}
    if use_environment_variables:
        text, env_variables = substitute_env(text, filename)
    text, placeholders = pre_substitute_base_refs(text)

    if suffix == ".py":
        try:
            tree = ast.parse(text, filename=filename)
        except SyntaxError as e:
            raise SyntaxError(f"There are syntax errors in config file {filename}: {e}") from e
        base_files = _base_paths_of_python(tree, filename)
        data = None
    else:
        data = load_structured(text, suffix, filename)
        base_files = _as_list(data.pop(BASE_KEY), filename) if BASE_KEY in data else []

    # merge the bases: a key may come from one base only
    base_cfg = ConfigDict()
    texts = []
    owner: dict[str, str] = {}
    for base in base_files:
        base_path = resolve_base_path(base, filename)
        base_dict, base_text, base_env = file_to_dict(
            base_path, use_predefined_variables, use_environment_variables, (*_chain, filename)
        )
        package = base.partition("::")[0] if "::" in base else None
        if package is not None and package != shipped.PACKAGE:
            # fastopt's own types need no scope: its registries are the default
            add_scope(base_dict, package)
        texts.append(base_text)
        env_variables.update(base_env)
        duplicate = base_cfg.keys() & base_dict.keys()
        if duplicate:
            detail = ", ".join(f"{k!r} in {owner[k]} and {base_path}" for k in sorted(duplicate))
            raise ConfigKeyError(
                f"Duplicate key is not allowed among bases. Duplicate keys: {duplicate} "
                f"({detail}; bases of config file {filename})"
            )
        for key in base_dict:
            owner[key] = base_path
        base_cfg.update(base_dict)

    if suffix == ".py":
        tree = _RemoveBaseAssign().visit(tree)
        namespace: dict[str, Any] = {BASE_KEY: base_cfg}
        exec(compile(tree, filename, "exec"), namespace)  # a .py config is Python by design
        cfg = {
            k: v
            for k, v in namespace.items()
            if k != BASE_KEY
            and not k.startswith("__")
            and not isinstance(v, (types.FunctionType, types.ModuleType))
        }
    else:
        cfg = data
        for key, value in list(cfg.items()):
            if isinstance(value, (types.FunctionType, types.ModuleType)):
                del cfg[key]

    if DEPRECATION_KEY in cfg:
        info = cfg.pop(DEPRECATION_KEY) or {}
        msg = f"The config file {filename} will be deprecated in the future."
        if info.get("expected"):
            msg += f" Please use {info['expected']} instead."
        if info.get("reference"):
            msg += f" More information can be found at {info['reference']}"
        warnings.warn(msg, DeprecationWarning, stacklevel=2)

    cfg = substitute_base_refs(cfg, placeholders, base_cfg, filename)
    cfg = ConfigDict(cfg)
    merged = merge_a_into_b(cfg, base_cfg, filename=filename)
    merged = ConfigDict({k: v for k, v in merged.items() if not str(k).startswith("__")})
    texts.append(f"{filename}\n{original}")
    return merged, "\n".join(texts), env_variables
