"""The runner and what it is made of: builders, environment, hooks, checkpoint state, seeding.

Importing this package registers the runner, the log processor, the samplers, the collate
functions, the vis backends, the hooks, the loops and the built-in models in their registries.
"""

from fastopt.fileio.checkpoint import (
    CorruptCheckpointError,
    find_latest_checkpoint,
    load_checkpoint_file,
    read_last_checkpoint,
    save_checkpoint,
    to_weights_only,
    verify_checkpoint,
    weights_to_cpu,
)
from fastopt.hooks.priority import Priority, get_priority
from fastopt.loops import BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop

from .hook_list import DEFAULT_HOOKS
from .log_processor import LogProcessor
from .randomness import get_rng_state, set_random_seed, set_rng_state
from .runner import Runner

# the loops and priorities are also importable from here, as from ``mmengine.runner``
__all__ = [
    "DEFAULT_HOOKS",
    "CorruptCheckpointError",
    "BaseLoop",
    "EpochBasedTrainLoop",
    "IterBasedTrainLoop",
    "LogProcessor",
    "Priority",
    "Runner",
    "TestLoop",
    "ValLoop",
    "get_priority",
    "find_latest_checkpoint",
    "get_rng_state",
    "load_checkpoint_file",
    "read_last_checkpoint",
    "save_checkpoint",
    "set_random_seed",
    "set_rng_state",
    "to_weights_only",
    "verify_checkpoint",
    "weights_to_cpu",
]
