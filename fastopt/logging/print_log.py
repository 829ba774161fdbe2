"""``print_log``: MMEngine's one-call logging helper, for code written against it."""

from __future__ import annotations

import logging

from .run_logger import active_run_logger, run_logger_name


def print_log(
    msg: object, logger: logging.Logger | str | None = None, level: int = logging.INFO
) -> None:
    """Log ``msg`` the way ``mmengine.logging.print_log`` does.

    Args:
        msg: what to log.
        logger: ``None``: print it; ``'silent'``: drop it; ``'current'``: the active run's
            logger (terminal and log file), or print it when no run is active; a
            ``logging.Logger``; another str: the run of that experiment name if one exists,
            else the logger of that name.
        level: the logging level (``logging.INFO``, ...).
    """
    if logger is None:
        print(msg)
    elif isinstance(logger, logging.Logger):
        logger.log(level, msg)
    elif logger == "silent":
        pass
    elif logger == "current":
        current = active_run_logger()
        if current is None:
            print(msg)
        else:
            current.log(level, msg)
    elif isinstance(logger, str):
        run = logging.getLogger(run_logger_name(logger))
        (run if run.handlers else logging.getLogger(logger)).log(level, msg)
    else:
        raise TypeError(
            "logger should be a logging.Logger, a str ('current', 'silent' or a name) or "
            f"None, but got {type(logger).__name__}"
        )
