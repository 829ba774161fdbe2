"""FSDP2 for configs: ``model_wrapper_cfg=dict(type='FullyShard', ...)``, and the state dicts
a checkpoint of a fully sharded model holds.

``fully_shard`` does not wrap a model: it shards the parameters of the modules it is applied
to in place (they become DTensors) and hooks their forward, so the model keeps its class,
``train_step`` and module names. The fused optimizers step the local shards (see
:mod:`fastopt.ops.dtensor`).

Checkpoints of a fully sharded model come in two kinds, ``FullyShard(state_dict_type=...)``:

* ``'full'`` (default): full state dicts, gathered from every rank and kept on rank 0's CPU, in
  the checkpoint file: the model's is an ordinary ``state_dict`` (loadable with
  ``torch.load(weights_only=True)`` by a 1-process run), the optimizer's is keyed by parameter
  name (``torch.distributed.checkpoint``'s full optimizer state dict);
* ``'sharded'``: every rank writes its shards of the model and optimizer states into a
  ``torch.distributed.checkpoint`` directory next to the checkpoint file (``iter_8.pth`` ->
  ``iter_8.dcp/``), which then holds everything else (meta, counters, schedulers, RNG states).
  Nothing is gathered: the memory and time of a save do not grow with the model on one rank.

Both resume at any world size, with or without FSDP2 (the directory is re-cut to the shards
of the loading run).
"""

from __future__ import annotations

import fnmatch
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fastopt.registry import MODEL_WRAPPERS

# the flag in a checkpoint's meta saying its optimizer state is keyed by parameter name
OPTIMIZER_STATE_BY_NAME = "optimizer_state_by_name"
# the key in a checkpoint's meta naming its sharded state directory (relative to the file)
SHARDED_STATE = "sharded_state"
#: what ``FullyShard(state_dict_type=...)`` accepts
STATE_DICT_TYPES = ("full", "sharded")
_STATE_DICT_TYPE_ATTR = "_fastopt_state_dict_type"


def _dtype(name: str, value: Any) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    dtype = getattr(torch, str(value), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"FullyShard: mp_policy.{name}={value!r} is not a torch dtype name")
    return dtype


def _targets(model: nn.Module, shard_modules: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Modules named by a pattern (``'layers.*'``, matched against module names) or by a class
    name (``'TransformerBlock'``); a module inside a chosen one is not chosen again."""
    chosen: list[tuple[str, nn.Module]] = []
    used: set[str] = set()
    for name, module in model.named_modules():
        if not name or any(name.startswith(c + ".") for c, _ in chosen):
            continue
        for pattern in shard_modules:
            if fnmatch.fnmatchcase(name, pattern) or type(module).__name__ == pattern:
                chosen.append((name, module))
                used.add(pattern)
                break
    unused = [p for p in shard_modules if p not in used]
    if unused:
        raise ValueError(
            f"FullyShard: shard_modules {unused} match no module name or class of "
            f"{type(model).__name__} (names look like {[n for n, _ in model.named_modules()][1:4]})"
        )
    return chosen


@MODEL_WRAPPERS.register_module(name="FullyShard")
def fully_shard_model(
    module: nn.Module,
    shard_modules: Sequence[str] = (),
    reshard_after_forward: bool = True,
    mp_policy: Mapping[str, Any] | None = None,
    state_dict_type: str = "full",
    device_ids: Any = None,  # the runner's DDP argument: FSDP2 takes the device from its mesh
) -> nn.Module:
    """Apply ``torch.distributed.fsdp.fully_shard`` to each module ``shard_modules`` names,
    innermost first, then to the whole model; ``mp_policy`` holds ``MixedPrecisionPolicy``'s
    fields with dtype names (``param_dtype='bfloat16'``, ``reduce_dtype='float32'``);
    ``state_dict_type`` is what the runner's checkpoints hold (module docstring)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if isinstance(shard_modules, str):
        raise TypeError(f"FullyShard: shard_modules must be a list, got {shard_modules!r}")
    if state_dict_type not in STATE_DICT_TYPES:
        raise ValueError(
            f"FullyShard: state_dict_type must be one of {STATE_DICT_TYPES}, got "
            f"{state_dict_type!r}"
        )
    policy = MixedPrecisionPolicy()
    if mp_policy:
        fields = {"param_dtype", "reduce_dtype", "output_dtype", "cast_forward_inputs"}
        unknown = set(mp_policy) - fields
        if unknown:
            raise ValueError(
                f"FullyShard: mp_policy has no {sorted(unknown)} (it has {sorted(fields)})"
            )
        policy = MixedPrecisionPolicy(
            **{k: (v if k == "cast_forward_inputs" else _dtype(k, v)) for k, v in mp_policy.items()}
        )
    for _, target in reversed(_targets(module, shard_modules)):
        fully_shard(target, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    fully_shard(module, reshard_after_forward=reshard_after_forward, mp_policy=policy)
    setattr(module, _STATE_DICT_TYPE_ATTR, state_dict_type)
    return module


def saves_sharded_state(model: nn.Module) -> bool:
    """A fully sharded model whose checkpoints hold a sharded state directory."""
    return is_fully_sharded(model) and getattr(model, _STATE_DICT_TYPE_ATTR, "full") == "sharded"


def sharded_state_dir(checkpoint_path: str) -> str:
    """The directory of a checkpoint file's sharded state: ``iter_8.pth`` -> ``iter_8.dcp``."""
    return os.path.splitext(checkpoint_path)[0] + ".dcp"


def _states(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    states: dict[str, Any] = {"model": get_model_state_dict(model)}
    if optimizer is not None:
        states["optimizer"] = get_optimizer_state_dict(model, optimizer)
    return states


def save_sharded_state(
    directory: str, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> None:
    """Write the model's (and optimizer's) shards into ``directory`` (every rank calls it)."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_states(model, optimizer), checkpoint_id=directory)


def _load(directory: str, states: dict[str, Any]) -> None:
    """Fill ``states`` (laid out as this run's) from ``directory``: DCP re-cuts the saved
    shards to this run's, or reads them whole in a process without a process group."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the checkpoint's sharded state {directory} is missing")
    no_dist = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():  # one process reading it all is what no_dist means here
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
        dcp.load(states, checkpoint_id=directory, no_dist=no_dist)


def load_sharded_model_state(directory: str, model: nn.Module, strict: bool) -> Any:
    """Read the model's state from ``directory``, sharded at this run's world size or whole
    without FSDP2 (every rank calls it). Returns the missing and unexpected keys."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        set_model_state_dict,
    )

    states = {"model": get_model_state_dict(model)}
    _load(directory, states)
    return set_model_state_dict(model, states["model"], options=StateDictOptions(strict=strict))


def sharded_model_placeholders(directory: str) -> dict[str, torch.Tensor]:
    """The model tensors a sharded state directory holds, as meta tensors of their full shapes
    (read from its metadata alone: to check a checkpoint fits a model before loading it)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    if not os.path.isdir(directory):
        raise FileNotFoundError(f"the checkpoint's sharded state {directory} is missing")
    entries = FileSystemReader(directory).read_metadata().state_dict_metadata
    return {
        key.removeprefix("model."): torch.empty(
            tuple(md.size), dtype=md.properties.dtype, device="meta"
        )
        for key, md in entries.items()
        if key.startswith("model.") and isinstance(md, TensorStorageMetadata)
    }


def read_sharded_model_state(directory: str) -> dict[str, torch.Tensor]:
    """The whole model state dict of a sharded state directory, read in one process (to
    publish the weights as one file)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(directory))) as tmp:
        path = os.path.join(tmp, "state.pth")
        dcp_to_torch_save(directory, path)
        return torch.load(path, map_location="cpu", weights_only=True)["model"]


def load_sharded_optimizer_state(
    directory: str, model: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """Read the optimizer's state from ``directory`` into ``optimizer`` over ``model``."""
    from torch.distributed.checkpoint.state_dict import (
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    states = {"optimizer": get_optimizer_state_dict(model, optimizer)}
    _load(directory, states)
    set_optimizer_state_dict(model, optimizer, states["optimizer"])


def is_fully_sharded(model: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, FSDPModule)


def _full_options(**kw: Any) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def full_model_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict, on rank 0's CPU (every rank must call it: it gathers)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_full_options())


def load_full_model_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any], strict: bool
) -> Any:
    """Shard a full state dict (as every rank loaded it) into a fully sharded model."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    return set_model_state_dict(model, dict(state_dict), options=_full_options(strict=strict))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer's full state dict, keyed by parameter name (every rank must call it)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options())


def load_full_optimizer_state_dict(
    model: nn.Module, optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]
) -> None:
    """Load a by-name full optimizer state dict into ``optimizer`` over ``model``, sharded
    (FSDP2) or not: the states of each param are cut to its local shard."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, dict(state_dict), options=_full_options())
