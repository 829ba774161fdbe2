"""The example configs shipped with fastopt: found by name, from any directory.

The repository keeps them in ``configs/``; a wheel installs the same files as
``fastopt/configs/`` (``pyproject.toml`` maps one onto the other), so ``fastopt train
cnn_sgd_cosine`` and ``_base_ = ['fastopt::_base_/schedules/sgd_cosine.py']`` work wherever the
command runs. A source checkout on ``sys.path`` (no install) uses its ``configs/`` folder.

Each shipped config's first line is a comment that describes it in one line
(``fastopt list-configs`` prints it).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

PACKAGE = "fastopt"
PREFIX = f"{PACKAGE}::"
SUFFIXES = (".py", ".json", ".yaml", ".yml")


def configs_root() -> Path | None:
    """The folder of the shipped configs: ``fastopt/configs`` of an installed package, else the
    ``configs/`` folder of the source checkout the package was imported from."""
    package_dir = Path(__file__).resolve().parents[1]
    for candidate in (package_dir / "configs", package_dir.parent / "configs"):
        if (candidate / "_base_").is_dir():
            return candidate
    return None


def config_names() -> list[str]:
    """Names of the shipped configs that train (``cnn_sgd_cosine``; not the ``_base_`` parts)."""
    root = configs_root()
    if root is None:
        return []
    return sorted(p.stem for p in root.iterdir() if p.is_file() and p.suffix in SUFFIXES)


def description(path: str | os.PathLike) -> str:
    """The one-line description of a config: its first line, when that is a comment."""
    with open(path, encoding="utf-8") as f:
        first = f.readline().strip()
    return first.lstrip("#").strip() if first.startswith("#") else ""


def shipped_path(name: str) -> Path | None:
    """The shipped config ``name`` (``cnn_sgd_cosine``, ``cnn_sgd_cosine.py``,
    ``fastopt::cnn_sgd_cosine.py`` or ``fastopt::_base_/...``), or None."""
    root = configs_root()
    if root is None:
        return None
    rel = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    candidates = [rel] if Path(rel).suffix in SUFFIXES else [rel + s for s in SUFFIXES]
    for candidate in candidates:
        path = (root / candidate).resolve()
        if path.is_file() and path.is_relative_to(root.resolve()):
            return path
    return None


def resolve_config(arg: str) -> str:
    """The file a command's CONFIG argument names: a path that exists, else a shipped config
    by name. Raises ``FileNotFoundError`` naming both places (and the closest names)."""
    if os.path.exists(arg) and not arg.startswith(PREFIX):
        return arg
    looks_like_name = arg.startswith(PREFIX) or (os.sep not in arg and "/" not in arg)
    found = shipped_path(arg) if looks_like_name else None
    if found is not None:
        return str(found)
    if not looks_like_name:
        return arg  # a path: the command says it does not exist
    stem = Path(arg[len(PREFIX) :] if arg.startswith(PREFIX) else arg).stem
    close = difflib.get_close_matches(stem, config_names(), n=2)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    raise FileNotFoundError(
        f"config file {arg} does not exist, and no config shipped with fastopt has that name "
        f"(`fastopt list-configs` lists them){hint}"
    )
