"""A rich progress bar for interactive terminals (and nothing anywhere else).

Logs written to files, CI output and pipes stay plain text: the bar is shown only when standard
output is a terminal (and ``TERM`` is not ``dumb``). Log lines printed while the bar is live
appear above it.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any, TextIO


def is_interactive(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stdout) is a terminal that can draw a live bar."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    try:
        tty = bool(isatty and isatty())
    except ValueError:  # closed stream
        return False
    return tty and os.environ.get("TERM", "") != "dumb"


class ProgressDisplay:
    """Named progress bars sharing one live display (e.g. a validation bar under the
    training bar). The display starts with the first bar and stops with the last."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def start(self, key: str, description: str, total: int, completed: int = 0) -> None:
        """Show bar ``key`` at ``completed``/``total`` (replaces a bar of that name)."""
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        if self._progress is None:
            console = Console(file=self._stream) if self._stream is not None else None
            self._progress = Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                redirect_stdout=True,
                redirect_stderr=True,
            )
            self._progress.start()
            # an exception may end the run before the last bar finishes: restore the cursor
            atexit.register(self.close)
        if key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))
        self._tasks[key] = self._progress.add_task(description, total=total, completed=completed)
        self._progress.refresh()  # draw it now, not at the next tick of the refresh thread

    def advance(self, key: str, steps: int = 1) -> None:
        """Move bar ``key`` forward (ignored if it is not shown)."""
        if key in self._tasks:
            self._progress.advance(self._tasks[key], steps)

    def finish(self, key: str) -> None:
        """Remove bar ``key``; stop the display when no bar is left."""
        if key in self._tasks:
            self._progress.remove_task(self._tasks.pop(key))
        if not self._tasks and self._progress is not None:
            self._progress.stop()
            self._progress = None
            atexit.unregister(self.close)

    def close(self) -> None:
        """Remove every bar."""
        for key in list(self._tasks):
            self.finish(key)
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
