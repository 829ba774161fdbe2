"""A training run's hold on its work dir: one run at a time, and nothing left by a failed start.

``fastopt train`` takes :func:`exclusive` before it writes anything: an ``flock`` on
``<work_dir>/.fastopt.lock``, whose content names the holder (PID, host, start time). A second run
into the same work dir is refused with that name; the kernel drops the lock when its holder dies
however it dies, so a lock file left by a killed run is found unlocked, reported as stale and
taken over. :func:`undo_on_failure` removes what a run added to the work dir (its timestamped log
dir, the config dump, the lock, the work dir itself when the run created it) when the run fails
before its first training iteration; a run that trained keeps its files, which tell what it did.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

from fastopt.commands.common import CommandError, note, shown_path

LOCK_NAME = ".fastopt.lock"


def writer_rank(cfg: Any) -> int:
    """This process's rank among the processes of the run (0 when it is not distributed): only
    rank 0 takes the lock and cleans up."""
    return int(os.environ.get("RANK", "0")) if cfg["launcher"] != "none" else 0


def _holder(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    started = holder.get("started")
    when = f", started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}"
    return f"PID {pid} on {host}" + (when if isinstance(started, (int, float)) else "")


class LocksUnsupported(Exception):
    """The work dir's file system has no flock (some network file systems)."""


def _open_locked(path: str) -> int | None:
    """An fd holding an exclusive flock on the file now at ``path``; None if someone holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES):
                return None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise LocksUnsupported(str(e)) from e
            raise
        # the holder may have unlinked the file between our open and our flock: then we hold a
        # lock on a file nobody else can see; start over on the one at the path now
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def exclusive(work_dir: str, rank: int = 0) -> Iterator[None]:
    """Hold the work dir's lock for the block (rank 0 of a distributed run only: the ranks of
    one run share its work dir)."""
    if rank != 0:
        yield
        return
    os.makedirs(work_dir, exist_ok=True)
    path = os.path.join(work_dir, LOCK_NAME)
    try:
        fd = _open_locked(path)
    except LocksUnsupported as e:
        note(
            f"work dir {shown_path(work_dir)} cannot be locked ({e}): a second run into it "
            "would not be detected"
        )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        yield
        return
    if fd is None:
        raise CommandError(
            f"work dir {shown_path(work_dir)} is in use by another fastopt run "
            f"({_describe(_holder(path))}); wait for it to finish, or use --work-dir NEW_DIR"
        )
    try:
        stale = _holder(path)
        if stale:
            note(
                f"work dir {shown_path(work_dir)}: taking over the lock left by a run that is "
                f"no longer running ({_describe(stale)})"
            )
        record = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time())
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        yield
    finally:
        # unlink while still holding the lock: a waiter that opened this file re-checks the inode
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def first_missing(path: str) -> str | None:
    """The outermost directory of ``path`` that does not exist yet (None: it exists)."""
    path = os.path.abspath(path)
    missing = None
    while not os.path.exists(path):
        missing, parent = path, os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


@contextlib.contextmanager
def undo_on_failure(
    work_dir: str, trained: Callable[[], bool], created: str | None, rank: int = 0
) -> Iterator[None]:
    """On an exception in the block, before ``trained()`` is true: remove what the block added
    to ``work_dir``, or ``created`` (the outermost directory that did not exist before the run,
    from :func:`first_missing`) with everything in it, then re-raise. Enter it holding the
    lock: nothing else writes into the work dir then."""
    before = set(os.listdir(work_dir)) if os.path.isdir(work_dir) else set()
    try:
        yield
    except BaseException:
        if rank == 0 and not trained():
            if created is not None:
                shutil.rmtree(created, ignore_errors=True)
            elif os.path.isdir(work_dir):
                for name in set(os.listdir(work_dir)) - before:
                    target = os.path.join(work_dir, name)
                    if os.path.isdir(target) and not os.path.islink(target):
                        shutil.rmtree(target, ignore_errors=True)
                    else:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(target)
        raise
