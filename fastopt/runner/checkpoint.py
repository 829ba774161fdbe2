"""Checkpoint files: written atomically, readable with ``torch.load(weights_only=True)``.

* :func:`save_checkpoint` writes to a temporary file in the destination directory, flushes and
  fsyncs it, then renames it over the destination (``os.replace`` is atomic on POSIX and
  Windows). A crash at any moment leaves either the old file or the new one, never a torn one.
* :func:`to_weights_only` turns a checkpoint into tensors, numbers, strings, lists, tuples and
  dicts before it is written (numpy values, ``Counter``, ``deque`` ... are converted; anything
  else is rejected with the path of the offending entry), so loading never needs
  ``weights_only=False`` -- MMEngine's checkpoints fail there on torch >= 2.6
  (open-mmlab/mmengine#1655).
"""

from __future__ import annotations

import collections
import logging
import numbers
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import nn

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


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write ``path`` by calling ``write(file)`` on a temporary file, then renaming it.

    The temporary file lives in the same directory (a rename across file systems is not
    atomic) and is fsynced before the rename, and the directory after it.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


def save_checkpoint(checkpoint: Mapping[str, Any], filename: str | os.PathLike) -> None:
    """Write ``checkpoint`` to ``filename`` atomically, in a weights_only-loadable form."""
    safe = to_weights_only(checkpoint)
    atomic_write(filename, lambda f: torch.save(safe, f))


def load_checkpoint_file(filename: str | os.PathLike, map_location: MapLocation = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(weights_only=True)``.

    A file that needs arbitrary unpickling (MMEngine >= 0.x checkpoints keep Python objects in
    ``message_hub``) is refused with an explanation instead of being executed.
    """
    filename = os.fspath(filename)
    if not os.path.isfile(filename):
        raise FileNotFoundError(f"checkpoint file {filename!r} does not exist")
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError or RuntimeError variants
        if "weights_only" not in str(e) and "Weights only" not in str(e):
            raise RuntimeError(f"cannot read checkpoint {filename!r}: {e}") from e
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


def find_latest_checkpoint(work_dir: str | os.PathLike) -> str | None:
    """The checkpoint named in ``work_dir/last_checkpoint``, or None if there is none.

    If the file names a path that no longer exists (the work dir was moved), a file of that
    name inside ``work_dir`` is used.
    """
    work_dir = os.fspath(work_dir)
    marker = os.path.join(work_dir, LAST_CHECKPOINT_FILE)
    if not os.path.isfile(marker):
        return None
    with open(marker, encoding="utf-8") as f:
        path = f.read().strip()
    if not path:
        return None
    if os.path.isfile(path):
        return path
    moved = os.path.join(work_dir, os.path.basename(path))
    if os.path.isfile(moved):
        return moved
    logger.warning("%s names %s, which does not exist", marker, path)
    return None
