"""``fastopt info``: versions, backends built, the CPU code path and the thread count."""

from __future__ import annotations

import argparse
import json

HELP = "show versions, the backends built, the CPU code path and thread count"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from fastopt._ext import build_info, format_info

    data = build_info()
    print(json.dumps(data, indent=2) if args.json else format_info(data))
    return 0 if data["backends"] else 1
