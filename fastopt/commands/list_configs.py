"""``fastopt list-configs``: the example configs shipped with fastopt, one line each."""

from __future__ import annotations

import argparse

HELP = "list the example configs shipped with fastopt (train one by name: fastopt train NAME)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--paths", action="store_true", help="also print where each config file is")


def run(args: argparse.Namespace) -> int:
    from fastopt.config import shipped

    root = shipped.configs_root()
    names = shipped.config_names()
    if root is None or not names:
        print("fastopt list-configs: error: no shipped configs found (a broken install?)")
        return 1
    width = max(len(n) for n in names)
    for name in names:
        path = shipped.shipped_path(name)
        assert path is not None
        line = f"{name:<{width}}  {shipped.description(path)}"
        print(line + (f"\n{'':<{width}}  {path}" if args.paths else ""))
    print(
        f"\ntrain one with `fastopt train NAME`; inherit from one with "
        f"_base_ = ['{shipped.PREFIX}NAME.py'] (its parts: {shipped.PREFIX}_base_/...)"
    )
    return 0
