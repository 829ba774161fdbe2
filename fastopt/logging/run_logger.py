"""The run logger: MMEngine's line format on the terminal and in ``<log_dir>/<timestamp>.log``.

Each runner gets its own ``logging.Logger`` (``fastopt.run.<experiment_name>``) so that two
runners in one process never write into each other's files. Records from fastopt's library
loggers (``fastopt.wrapper``, ``fastopt.constructor``, ...) are forwarded to the runner that
is currently active, so their warnings land in the same log file. A runner is active from
its construction until the end of its ``train()``/``val()``/``test()`` (and again during the
next one); outside runs, library records go where Python's logging sends them (the root
logger's handlers, else warnings to stderr), never into a finished run's file.

The terminal gets the run's own lines and every warning; details go to the log file only: a
record logged with ``extra=FILE_ONLY`` (the environment, config and hook-order dump) and the
library's INFO records (paramwise options, layer-decay tables), which would otherwise bury
the short run header and any error under a hundred lines.
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import Any

_FORMAT = "%(asctime)s - fastopt - %(levelname)s - %(message)s"
_DATEFMT = "%Y/%m/%d %H:%M:%S"
_RUN_PREFIX = "fastopt.run."
_FILE_ONLY_ATTR = "fastopt_file_only"
FILE_ONLY = {_FILE_ONLY_ATTR: True}  # ``logger.info(msg, extra=FILE_ONLY)``: the log file only


def _for_terminal(record: logging.LogRecord) -> bool:
    return not getattr(record, _FILE_ONLY_ATTR, False)


class _CurrentStdout(logging.StreamHandler):
    """A StreamHandler that looks ``sys.stdout`` up at each record.

    A progress bar that redirects stdout (rich) then keeps log lines above the bar instead
    of tearing it.
    """

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ assigns it
        pass


class _RunFileHandler(logging.FileHandler):
    """The run's log file. A record that cannot be written (the file was closed, e.g. by
    ``logging.shutdown``, and its directory deleted since) is reported the way logging
    reports any failing handler, instead of raising into the code that logged it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            super().emit(record)  # reopening a closed file happens outside its own try
        except OSError:
            self.handleError(record)


class _ForwardToActiveRun(logging.Handler):
    """Installed once on the ``fastopt`` logger: hands library records to the active run."""

    active: weakref.ReferenceType[logging.Logger] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_RUN_PREFIX):
            return
        target = active_run_logger()
        if target is None:
            # This handler alone would make logging skip its last resort (warnings to
            # stderr) when nothing else is configured: behave as if it were not there.
            if not logging.getLogger().handlers and record.levelno >= logging.lastResort.level:
                logging.lastResort.handle(record)
            return
        if record.levelno >= target.level:
            if record.levelno < logging.WARNING:
                setattr(record, _FILE_ONLY_ATTR, True)  # library details: the log file only
            for handler in target.handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)


_forwarder = _ForwardToActiveRun()


def run_logger_name(experiment_name: str) -> str:
    """The ``logging`` name of the logger of the run ``experiment_name``."""
    return _RUN_PREFIX + experiment_name


def _level(log_level: int | str) -> int:
    if isinstance(log_level, str):
        value = logging.getLevelName(log_level.upper())
        if not isinstance(value, int):
            raise ValueError(f"unknown log_level {log_level!r}; use DEBUG, INFO, WARNING, ERROR")
        return value
    return int(log_level)


def build_run_logger(
    name: str,
    log_file: str | None,
    log_level: int | str = "INFO",
    rank: int = 0,
    file_mode: str = "a",
) -> logging.Logger:
    """The logger of one run: terminal (rank 0) and ``log_file`` (rank 0), both formatted.

    Other ranks log warnings and errors to the terminal only.
    """
    level = _level(log_level)
    logger = logging.getLogger(run_logger_name(name))
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(_FORMAT, _DATEFMT)
    console = _CurrentStdout()
    console.setFormatter(formatter)
    console.setLevel(level if rank == 0 else logging.WARNING)
    console.addFilter(_for_terminal)
    logger.addHandler(console)
    if log_file is not None and rank == 0:
        file_handler = _RunFileHandler(log_file, mode=file_mode, encoding="utf-8")
        file_handler.setFormatter(formatter)
        file_handler.setLevel(level)
        logger.addHandler(file_handler)
    logger.setLevel(level)
    activate(logger)
    return logger


def activate(logger: logging.Logger) -> None:
    """Make ``logger`` the receiver of fastopt's library records."""
    package = logging.getLogger("fastopt")
    if _forwarder not in package.handlers:
        package.addHandler(_forwarder)
    # library INFO records (e.g. the constructor's paramwise options) must reach the run
    if package.level == logging.NOTSET or package.level > logger.level:
        package.setLevel(logger.level)
    _ForwardToActiveRun.active = weakref.ref(logger)


def active_run_logger() -> logging.Logger | None:
    """The logger of the runner that is active now, if any."""
    return _ForwardToActiveRun.active() if _ForwardToActiveRun.active is not None else None


def deactivate(logger: logging.Logger) -> None:
    """Stop forwarding library records to ``logger`` (if it is the active one)."""
    if _ForwardToActiveRun.active is not None and _ForwardToActiveRun.active() is logger:
        _ForwardToActiveRun.active = None


def close_run_logger(logger: logging.Logger) -> None:
    """Flush and close the handlers of ``logger`` (the log file is complete afterwards)."""
    for handler in list(logger.handlers):
        handler.flush()
        if isinstance(handler, logging.FileHandler):
            handler.close()
            logger.removeHandler(handler)
    deactivate(logger)
