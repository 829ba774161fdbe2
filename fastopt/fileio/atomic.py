"""Atomic file writes: a crash at any moment leaves the old file or the new one, never a torn one.

A file is written to a temporary file in the destination directory (a rename across file
systems is not atomic), flushed and fsynced, then renamed over the destination with
``os.replace`` (atomic on POSIX and Windows), and the directory is fsynced. The temporary file
is created with mode ``0o666`` less the umask, as ``open()`` would (``mkstemp``'s 0600 would
make every file private to its owner).
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Callable


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temp(directory: str, name: str) -> tuple[int, str]:
    """A new file ``directory/.<name>.<random>.tmp``, open for writing.

    Created with mode 0o666, so the kernel applies the umask as for any ``open()``
    (``tempfile.mkstemp`` uses 0o600, and ``os.replace`` keeps the temporary file's mode).
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {name} in {directory}")


def write_temp(
    path: str, write: Callable[[Any], Any], mode: str, encoding: str | None
) -> tuple[str, Any]:
    """Write a fsynced temporary file next to ``path``; return it and ``write``'s result."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = _create_temp(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            result = write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _unlink_quietly(tmp)
        raise
    return tmp, result


def commit_temp(tmp: str, path: str) -> None:
    """Rename the complete temporary file ``tmp`` to ``path``, then fsync the directory."""
    try:
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(path)))


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[Any], Any],
    mode: str = "wb",
    encoding: str | None = None,
) -> Any:
    """Write ``path`` by calling ``write(file)`` on a temporary file, then renaming it.

    The temporary file lives in the same directory (a rename across file systems is not
    atomic) and is fsynced before the rename, and the directory after it. The new file's mode
    is what ``open()`` gives (0o666 less the umask). Returns what ``write`` returned.
    """
    path = os.fspath(path)
    tmp, result = write_temp(path, write, mode, encoding if "b" not in mode else None)
    commit_temp(tmp, path)
    return result
