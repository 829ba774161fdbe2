"""File I/O below the runner: atomic writes and checkpoint files (format, checksums, loading)."""

from .atomic import atomic_write
from .checkpoint import (
    CorruptCheckpointError,
    find_latest_checkpoint,
    load_checkpoint_file,
    read_last_checkpoint,
    save_checkpoint,
    to_weights_only,
    verify_checkpoint,
    weights_to_cpu,
)

__all__ = [
    "CorruptCheckpointError",
    "atomic_write",
    "find_latest_checkpoint",
    "load_checkpoint_file",
    "read_last_checkpoint",
    "save_checkpoint",
    "to_weights_only",
    "verify_checkpoint",
    "weights_to_cpu",
]
