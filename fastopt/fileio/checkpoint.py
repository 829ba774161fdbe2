"""Checkpoint files: written atomically, readable with ``torch.load(weights_only=True)``.

* :func:`save_checkpoint` writes atomically (:mod:`fastopt.fileio.atomic`): a crash at any
  moment leaves either the old file or the new one, never a torn one.
* Every checkpoint carries a SHA-256 checksum of its payload (the bytes ``torch.save``
  wrote) in the zip archive's comment, ``fastopt-sha256=<hex>``; zip readers, and so
  ``torch.load``, ignore the comment. :func:`verify_checkpoint` streams the file through
  SHA-256 and compares; every loader calls it, so a flipped byte is an error naming the file
  (:class:`CorruptCheckpointError`) instead of silently wrong weights. Files without a
  checksum (MMEngine's, older fastopt's) load unverified.
* ``work_dir/last_checkpoint`` holds the path of the latest checkpoint on its first line (as
  MMEngine writes it) and ``sha256=<hex>`` on the second; a plain one-line file still reads.
* :func:`to_weights_only` turns a checkpoint into tensors, numbers, strings, lists, tuples and
  dicts before it is written (numpy values, ``Counter``, ``deque`` ... are converted; anything
  else is rejected with the path of the offending entry), so loading never needs
  ``weights_only=False`` -- MMEngine's checkpoints fail there on torch >= 2.6
  (open-mmlab/mmengine#1655).
"""

from __future__ import annotations

import collections
import hashlib
import logging
import numbers
import os
import re
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any, Callable, NamedTuple, Union

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write, commit_temp, write_temp

logger = logging.getLogger(__name__)

MapLocation = Union[str, torch.device, Callable, dict, None]

LAST_CHECKPOINT_FILE = "last_checkpoint"
_SCALARS = (type(None), bool, int, float, str, bytes, torch.dtype, torch.device, torch.Size)


def to_weights_only(obj: Any, path: str = "checkpoint") -> Any:
    """``obj`` made of types ``torch.load(weights_only=True)`` accepts.

    numpy arrays become tensors, numpy scalars Python numbers, ``Counter``/``defaultdict``
    plain dicts, ``deque``/``set`` lists; tensors are detached. Raises TypeError naming
    ``path[key]...`` for anything else (e.g. a module or an arbitrary object).
    """
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if type(obj) in _SCALARS:  # exact types: np.float64 and IntEnum members subclass them
        return obj
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bool):
        return bool(obj)
    if isinstance(obj, str):
        return str(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        return float(obj)
    if isinstance(obj, Mapping):
        items = {}
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None), tuple)):
                raise TypeError(
                    f"{path}: a checkpoint dict key must be a str or a number, got "
                    f"{type(key).__name__} {key!r}"
                )
            items[key] = to_weights_only(value, f"{path}[{key!r}]")
        if type(obj) is collections.OrderedDict:
            out = collections.OrderedDict(items)
            metadata = getattr(obj, "_metadata", None)  # module state dicts carry versions
            if metadata is not None:
                out._metadata = to_weights_only(dict(metadata), f"{path}._metadata")  # type: ignore[attr-defined]
            return out
        return items
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(to_weights_only(v, f"{path}[{i}]") for i, v in enumerate(obj))
    if isinstance(obj, (list, collections.deque, set, frozenset)):
        return [to_weights_only(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    shown = repr(obj)
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    raise TypeError(
        f"{path}: {type(obj).__module__}.{type(obj).__qualname__} {shown} cannot be stored in a "
        "checkpoint that loads with torch.load(weights_only=True); store tensors, numbers, "
        "strings, lists and dicts (e.g. convert it in a before_save_checkpoint hook)"
    )


# ------------------------------------------------------------------------------ checksums
CHECKSUM_PREFIX = b"fastopt-sha256="
_EOCD = b"PK\x05\x06"  # zip end-of-central-directory record: 22 bytes + the comment
_EOCD_SIZE = 22
_CHUNK = 1 << 20


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose data does not match its checksum, or that cannot be read at all.

    ``path``: the file; ``reason``: what is wrong with it; ``intact``: the newest intact
    checkpoint next to it, or None (the message names it too).
    """

    def __init__(self, reason: str, path: str = "", intact: str | None = None) -> None:
        super().__init__(reason + (_hint(path, intact) if path else ""))
        self.path = path
        self.reason = reason
        self.intact = intact


def _corrupt(path: str, reason: str) -> CorruptCheckpointError:
    """The error for corrupt ``path``, naming the newest intact checkpoint there."""
    return CorruptCheckpointError(reason, path, newest_intact_checkpoint(path, True))


class _HashingWriter:
    """Passes writes to ``file`` and hashes them; keeps the last bytes (the zip's EOCD)."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.sha = hashlib.sha256()
        self.tail = b""

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")  # no copy of a large storage
        self.sha.update(view)
        self.tail = (self.tail + view[-_EOCD_SIZE:].tobytes())[-_EOCD_SIZE:]
        return self.file.write(view)

    def flush(self) -> None:
        self.file.flush()


def _write_checkpoint(obj: Any, f: Any) -> str:
    """``torch.save(obj, f)``, then the payload's SHA-256 written into the zip comment."""
    writer = _HashingWriter(f)
    torch.save(obj, writer)
    digest = writer.sha.hexdigest()
    tail = writer.tail
    if len(tail) == _EOCD_SIZE and tail.startswith(_EOCD) and tail[-2:] == b"\0\0":
        comment = CHECKSUM_PREFIX + digest.encode("ascii")
        f.seek(-2, os.SEEK_END)  # the comment length, 0 as torch.save writes it
        f.write(struct.pack("<H", len(comment)) + comment)
    return digest


def _stored_checksum(f: Any, size: int) -> tuple[str | None, int]:
    """The checksum in the zip comment of the open file ``f`` and the payload's length.

    The payload is the file without its comment (``size`` when there is none).
    """
    comment_len = len(CHECKSUM_PREFIX) + 64
    end = _EOCD_SIZE + comment_len
    if size < end:
        return None, size
    f.seek(size - end)
    tail = f.read(end)
    if not tail.startswith(_EOCD) or tail[20:22] != struct.pack("<H", comment_len):
        return None, size
    comment = tail[_EOCD_SIZE:]
    if not comment.startswith(CHECKSUM_PREFIX):
        return None, size
    digest = comment[len(CHECKSUM_PREFIX) :].decode("ascii", "replace")
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        return None, size
    return digest, size - comment_len


def _payload_sha256(f: Any, length: int) -> str:
    """SHA-256 of the first ``length`` bytes of ``f`` (a file with our zip comment cut off)
    with the comment length zeroed: the bytes ``torch.save`` wrote. Read in 1 MiB chunks."""
    sha = hashlib.sha256()
    f.seek(0)
    left = length - 2
    while left > 0:
        chunk = f.read(min(_CHUNK, left))
        if not chunk:
            break
        sha.update(chunk)
        left -= len(chunk)
    sha.update(b"\0\0")
    return sha.hexdigest()


class Checksums(NamedTuple):
    stored: str | None  # in the file's zip comment (None: the file has none)
    actual: str  # of the file's payload, computed now


# (device, inode, size, mtime_ns, ctime_ns) -> Checksums, for files verified while they were
# older than a few seconds (so a later change gets a new mtime even on coarse clocks)
_verified: dict[tuple, Checksums] = {}


def checkpoint_checksums(path: str | os.PathLike) -> Checksums:
    """The checksum stored in checkpoint ``path`` and the one of its payload now."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        if key in _verified:
            return _verified[key]
        settled = time.time() - max(st.st_mtime, st.st_ctime) > 5.0
        stored, length = _stored_checksum(f, st.st_size)
        if stored is None:  # the whole file, as it is
            sha = hashlib.sha256()
            f.seek(0)
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                sha.update(chunk)
            result = Checksums(None, sha.hexdigest())
        else:
            result = Checksums(stored, _payload_sha256(f, length))
    if settled:
        if len(_verified) > 256:
            _verified.clear()
        _verified[key] = result
    return result


def has_checksum(path: str | os.PathLike) -> bool:
    """Whether checkpoint ``path`` carries a fastopt checksum (cheap: reads its last bytes)."""
    with open(path, "rb") as f:
        return _stored_checksum(f, os.fstat(f.fileno()).st_size)[0] is not None


def verify_checkpoint(path: str | os.PathLike, expected: str | None = None) -> str | None:
    """Check checkpoint ``path`` against its stored checksum (and ``expected``, e.g. the one
    ``last_checkpoint`` recorded); return the payload's SHA-256, or None when there is
    nothing to check against (a file without a checksum and no ``expected``).

    Raises :class:`CorruptCheckpointError` naming the file, and the newest intact checkpoint
    next to it, on a mismatch. A file whose own checksum matches but differs from
    ``expected`` was replaced after it was recorded (a kill between the rename and the record):
    it is complete, so it is used, with a warning.
    """
    path = os.fspath(path)
    if expected is None and not has_checksum(path):
        return None
    sums = checkpoint_checksums(path)
    if sums.stored is not None and sums.stored != sums.actual:
        raise _corrupt(
            path,
            f"checkpoint {path} is corrupt: its data does not match the SHA-256 checksum "
            f"stored in it (stored {sums.stored[:12]}..., computed {sums.actual[:12]}...)",
        )
    if expected is not None and expected != sums.actual:
        if sums.stored is None:
            raise _corrupt(
                path,
                f"checkpoint {path} is corrupt: its data does not match the SHA-256 checksum "
                f"recorded in {LAST_CHECKPOINT_FILE} (recorded {expected[:12]}..., computed "
                f"{sums.actual[:12]}...)",
            )
        logger.warning(
            "%s was rewritten after %s recorded it (its own checksum matches): using it",
            path,
            LAST_CHECKPOINT_FILE,
        )
    return sums.actual


_PUBLISHED = re.compile(r"-[0-9a-f]{8}\.pth$")


def newest_intact_checkpoint(
    path: str | os.PathLike, with_training_state: bool = False
) -> str | None:
    """The newest (by modification time) other ``*.pth`` next to ``path`` whose checksum
    matches. Files without a checksum cannot be vouched for and are skipped, and so are
    published ones (``<name>-<sha8>.pth``, weights only) when ``with_training_state``."""
    path = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    candidates = []
    for name in names:
        full = os.path.join(directory, name)
        if not name.endswith(".pth") or name.startswith(".") or full == path:
            continue
        if with_training_state and _PUBLISHED.search(name):
            continue
        try:
            candidates.append((os.stat(full).st_mtime_ns, full))
        except OSError:
            continue
    for _, full in sorted(candidates, reverse=True):
        try:
            sums = checkpoint_checksums(full)
        except OSError:
            continue
        if sums.stored is not None and sums.stored == sums.actual:
            return full
    return None


def _hint(path: str | os.PathLike, intact: str | None) -> str:
    directory = os.path.dirname(os.path.abspath(os.fspath(path)))
    if intact is None:
        return f"; no other checkpoint in {directory} is intact"
    return f"; the newest intact checkpoint there is {intact}"


def save_checkpoint(checkpoint: Mapping[str, Any], filename: str | os.PathLike) -> str:
    """Write ``checkpoint`` to ``filename`` atomically, in a weights_only-loadable form, with
    the payload's SHA-256 in the zip comment. Returns that checksum (hex)."""
    safe = to_weights_only(checkpoint)
    return atomic_write(filename, lambda f: _write_checkpoint(safe, f))


def save_checkpoint_as(
    checkpoint: Mapping[str, Any], directory: str, name: Callable[[str], str]
) -> tuple[str, str]:
    """Like :func:`save_checkpoint` with the file name made from the checksum by ``name``
    (published checkpoints: ``epoch_3-<sha[:8]>.pth``). Returns the path and the checksum."""
    safe = to_weights_only(checkpoint)
    tmp, digest = write_temp(
        os.path.join(directory, name("0" * 64)), lambda f: _write_checkpoint(safe, f), "wb", None
    )
    path = os.path.join(directory, name(digest))
    commit_temp(tmp, path)
    return path, digest


def load_checkpoint_file(
    filename: str | os.PathLike, map_location: MapLocation = "cpu", expected: str | None = None
) -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)`` after verifying its checksum
    (and ``expected``, see :func:`verify_checkpoint`).

    A file that needs arbitrary unpickling (MMEngine >= 0.x checkpoints keep Python objects in
    ``message_hub``) is refused with an explanation instead of being executed. A corrupt or
    unreadable file raises :class:`CorruptCheckpointError` naming it and the newest intact
    checkpoint next to it.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file {filename!r} does not exist")
    verify_checkpoint(filename, expected)
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError or RuntimeError variants
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise _corrupt(filename, f"cannot read checkpoint {filename!r}: {e}") from e
        raise RuntimeError(
            f"checkpoint {filename!r} contains Python objects that torch.load(weights_only=True) "
            "refuses (MMEngine checkpoints store a HistoryBuffer and numpy arrays in "
            "'message_hub'). If you trust the file, load it with torch.load(..., "
            "weights_only=False) and save {'state_dict': ckpt['state_dict']} for load_from. "
            f"torch said: {str(e).splitlines()[0]}"
        ) from e
    if not isinstance(checkpoint, dict):
        raise RuntimeError(
            f"checkpoint {filename!r} holds a {type(checkpoint).__name__}, not a dict"
        )
    return checkpoint


def weights_to_cpu(state_dict: Mapping[str, Any]) -> collections.OrderedDict:
    """A copy of ``state_dict`` with every tensor on the CPU (keeps ``_metadata``)."""
    out = collections.OrderedDict(
        (k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state_dict.items()
    )
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def revise_state_dict(
    state_dict: Mapping[str, Any], revise_keys: Sequence[tuple[str, str]] = ((r"^module\.", ""),)
) -> collections.OrderedDict:
    """Rename keys with ``(pattern, replacement)`` regexes (default: strip ``module.``)."""
    out = collections.OrderedDict(state_dict)
    metadata = getattr(state_dict, "_metadata", None)
    for pattern, repl in revise_keys:
        out = collections.OrderedDict((re.sub(pattern, repl, k), v) for k, v in out.items())
        if metadata is not None:
            metadata = collections.OrderedDict(
                (re.sub(pattern, repl, k), v) for k, v in metadata.items()
            )
    if metadata is not None:
        out._metadata = metadata  # type: ignore[attr-defined]
    return out


def load_model_state(
    model: nn.Module,
    state_dict: Mapping[str, Any],
    strict: bool = False,
    log: logging.Logger | None = None,
) -> None:
    """``model.load_state_dict`` that reports missing and unexpected keys instead of hiding them.

    With ``strict=True`` any mismatch raises; otherwise it is logged as a warning.
    """
    # imported here: file I/O sits below fastopt.model, which only an FSDP2 model needs
    from fastopt.model.fsdp import is_fully_sharded, load_full_model_state_dict

    if is_fully_sharded(model):  # FSDP2: every rank cuts the full tensors to its shards
        result = load_full_model_state_dict(model, state_dict, strict=False)
    else:
        result = model.load_state_dict(state_dict, strict=False)
    problems = []
    if result.unexpected_keys:
        problems.append(f"unexpected key in source state_dict: {', '.join(result.unexpected_keys)}")
    if result.missing_keys:
        problems.append(f"missing keys in source state_dict: {', '.join(result.missing_keys)}")
    if problems:
        message = "\n".join(problems)
        if strict:
            raise RuntimeError(
                f"Error(s) in loading state_dict for {type(model).__name__}:\n{message}"
            )
        (log or logger).warning(message)


class CheckpointRecord(NamedTuple):
    path: str  # the checkpoint (found inside the work dir when the recorded one moved)
    sha256: str | None  # its payload's checksum; None in records of MMEngine / older fastopt


def format_last_checkpoint(path: str, sha256: str | None) -> str:
    """The text of ``last_checkpoint``: the path (MMEngine's whole file), then the checksum."""
    return path if sha256 is None else f"{path}\nsha256={sha256}\n"


def read_last_checkpoint(work_dir: str | os.PathLike) -> CheckpointRecord | None:
    """The record in ``work_dir/last_checkpoint``, or None if there is none (or it names a
    file that does not exist, also inside ``work_dir``). A record naming a file outside
    ``work_dir`` whose name is also a file inside it means the work dir was moved or copied:
    the file inside is the one.

    Reads fastopt's two-line record and MMEngine's (and older fastopt's) bare path.
    """
    work_dir = os.fspath(work_dir)
    marker = os.path.join(work_dir, LAST_CHECKPOINT_FILE)
    if not os.path.isfile(marker):
        return None
    with open(marker, encoding="utf-8") as f:
        lines = f.read().strip().splitlines()
    if not lines or not lines[0].strip():
        return None
    path = lines[0].strip()
    sha256 = None
    for line in lines[1:]:
        key, _, value = line.strip().partition("=")
        if key == "sha256" and re.fullmatch(r"[0-9a-f]{64}", value):
            sha256 = value
    # a work dir moved or copied: its own file of that name, not the old location's (which a
    # copy leaves in place, and which a run of the copy must neither resume nor report)
    moved = os.path.join(work_dir, os.path.basename(path))
    if os.path.realpath(os.path.dirname(path)) != os.path.realpath(work_dir) and os.path.isfile(
        moved
    ):
        return CheckpointRecord(moved, sha256)
    if os.path.isfile(path):
        return CheckpointRecord(path, sha256)
    logger.warning("%s names %s, which does not exist", marker, path)
    return None


def find_latest_checkpoint(work_dir: str | os.PathLike) -> str | None:
    """The checkpoint named in ``work_dir/last_checkpoint``, or None if there is none.

    If the file names a path that no longer exists (the work dir was moved), a file of that
    name inside ``work_dir`` is used.
    """
    record = read_last_checkpoint(work_dir)
    return None if record is None else record.path
