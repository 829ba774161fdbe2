"""FSDP2 for configs: ``model_wrapper_cfg=dict(type='FullyShard', ...)``, and the state dicts
a checkpoint of a fully sharded model holds.

``fully_shard`` does not wrap a model: it shards the parameters of the modules it is applied
to in place (they become DTensors) and hooks their forward, so the model keeps its class,
``train_step`` and module names. The fused optimizers step the local shards (see
:mod:`fastopt.ops.dtensor`).

Checkpoints hold *full* state dicts, gathered from every rank and kept on rank 0's CPU: the
model's is an ordinary ``state_dict`` (loadable with ``torch.load(weights_only=True)`` by a
1-process run), the optimizer's is keyed by parameter name (``torch.distributed.checkpoint``'s
full optimizer state dict), so a run resumes at any world size, with or without FSDP2.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fastopt.registry import MODEL_WRAPPERS

# the flag in a checkpoint's meta saying its optimizer state is keyed by parameter name
OPTIMIZER_STATE_BY_NAME = "optimizer_state_by_name"


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
    device_ids: Any = None,  # the runner's DDP argument: FSDP2 takes the device from its mesh
) -> nn.Module:
    """Apply ``torch.distributed.fsdp.fully_shard`` to each module ``shard_modules`` names,
    innermost first, then to the whole model; ``mp_policy`` holds ``MixedPrecisionPolicy``'s
    fields with dtype names (``param_dtype='bfloat16'``, ``reduce_dtype='float32'``)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if isinstance(shard_modules, str):
        raise TypeError(f"FullyShard: shard_modules must be a list, got {shard_modules!r}")
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
    return module


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
