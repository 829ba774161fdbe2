"""The ``fastopt`` command: one subcommand per module in :mod:`fastopt.commands`.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and
``run(args) -> int``. Modules are imported only when their command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# command name -> module; keep in the order ``fastopt --help`` should list them
COMMANDS: dict[str, str] = {
    "train": "fastopt.commands.train",
    "test": "fastopt.commands.test",
    "plot": "fastopt.commands.plot",
    "info": "fastopt.commands.info",
    "bench": "fastopt.commands.bench",
    "plot-schedule": "fastopt.commands.plot_schedule",
    "list-configs": "fastopt.commands.list_configs",
}


DESCRIPTION = (
    "Fused multi-tensor optimizers for PyTorch, and a trainer that runs MMEngine-style "
    "configs. Start with `fastopt list-configs` and `fastopt train cnn_sgd_cosine`."
)
EPILOG = "`fastopt COMMAND --help` shows the options of a command."


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastopt", description=DESCRIPTION, epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        cmd = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("fastopt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastopt info | head`: the reader left; say nothing more
        sys.stdout = None
        return 0


if __name__ == "__main__":
    sys.exit(main())
