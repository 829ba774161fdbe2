"""Subcommands of the ``fastopt`` command (see :mod:`fastopt.cli`)."""
