"""A run's checkpoint: which state goes in, how it comes back, and which file to resume from.

Everything a checkpoint of a run holds is decided here; the file format (atomic writes,
checksums, ``weights_only`` loading, ``last_checkpoint``) is :mod:`fastopt.fileio.checkpoint`.
A checkpoint is a dict::

    meta              epoch, iter, cfg, seed, experiment_name, time, fastopt_version,
                      dataset_meta; for an FSDP2 run OPTIMIZER_STATE_BY_NAME, or
                      SHARDED_STATE: the directory of its shards (next to the file)
    state_dict        the model's weights on the CPU (FSDP2: the full, gathered weights;
                      absent with SHARDED_STATE: in the directory)
    message_hub       the run's message hub
    optimizer         the optimizer wrapper's state (loss scaler included; with
                      SHARDED_STATE its per-param states are in the directory)
    param_schedulers  a list (a dict of lists per optimizer) of scheduler states + ``_type``
    train_dataloader  {"sampler": the train sampler's state}
    rng_state         every rank's RNG states, in rank order

Restoring is exact: the order below (counters, seed, message hub, optimizer, schedulers,
sampler, and the RNG states last) makes a resumed run continue bit for bit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

import fastopt
from fastopt import dist
from fastopt.dataset import loader_sampler
from fastopt.fileio.atomic import atomic_write
from fastopt.fileio.checkpoint import (
    LAST_CHECKPOINT_FILE,
    format_last_checkpoint,
    read_last_checkpoint,
    to_weights_only,
    verify_checkpoint,
    weights_to_cpu,
)
from fastopt.model import unwrap_model
from fastopt.model.fsdp import (
    OPTIMIZER_STATE_BY_NAME,
    SHARDED_STATE,
    full_model_state_dict,
    full_optimizer_state_dict,
    is_fully_sharded,
    load_full_optimizer_state_dict,
    load_sharded_optimizer_state,
    save_sharded_state,
    saves_sharded_state,
    sharded_state_dir,
)
from fastopt.wrapper import OptimWrapper, OptimWrapperDict

from .randomness import get_rng_state, set_rng_state

if TYPE_CHECKING:
    from .runner import Runner


def _to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor moved to the CPU (checkpoints load anywhere)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_to_cpu(v) for v in obj)
    return obj


# --------------------------------------------------------------------------------- saving
def checkpoint_meta(runner: Runner, meta: dict | None, by_epoch: bool) -> dict:
    """``meta`` completed with the counters (those of the next start) and the run's facts."""
    if meta is None:
        meta = {}
    elif not isinstance(meta, dict):
        raise TypeError(f"meta should be a dict or None, but got {type(meta)}")
    meta = dict(meta)
    if by_epoch:
        # called from after_train_epoch, before the loop increments the epoch
        meta.setdefault("epoch", runner.epoch + 1)
        meta.setdefault("iter", runner.iter)
    else:
        meta.setdefault("epoch", runner.epoch)
        meta.setdefault("iter", runner.iter + 1)
    meta.update(
        cfg=runner.cfg_text,
        seed=runner.seed,
        experiment_name=runner.experiment_name,
        time=time.strftime("%Y%m%d_%H%M%S", time.localtime()),
        fastopt_version=fastopt.__version__,
    )
    if runner.train_loop_configured:
        metainfo = getattr(runner.train_dataloader.dataset, "metainfo", None)
        if metainfo is not None:
            meta["dataset_meta"] = metainfo
    return meta


def scheduler_states(param_schedulers: list | dict) -> list | dict:
    """Each scheduler's state with its class name (``_type``), checked on resume."""

    def states(schedulers: list) -> list:
        out = []
        for scheduler in schedulers:
            state = dict(scheduler.state_dict())
            state["_type"] = type(scheduler).__name__
            out.append(state)
        return out

    if isinstance(param_schedulers, dict):
        return {name: states(group) for name, group in param_schedulers.items()}
    return states(param_schedulers)


def collect_checkpoint(
    runner: Runner, meta: dict, save_optimizer: bool, save_param_scheduler: bool, path: str
) -> dict[str, Any]:
    """The checkpoint dict of ``runner``'s state (see the module docstring), to be written to
    ``path``.

    Call it on every rank: the RNG states of all ranks are gathered (and FSDP2 gathers its
    shards, or writes them into the sharded state directory next to ``path``).
    """
    model = unwrap_model(runner.model)
    sharded = is_fully_sharded(model)  # FSDP2: full state dicts or a directory of shards
    optim_wrapper = runner.optim_wrapper
    if save_optimizer and not isinstance(optim_wrapper, OptimWrapper):
        raise TypeError(
            "self.optim_wrapper should be an `OptimWrapper` or `OptimWrapperDict` "
            f"instance, but got {optim_wrapper}"
        )
    if sharded and save_optimizer and isinstance(optim_wrapper, OptimWrapperDict):
        raise NotImplementedError(
            "checkpoints of an FSDP2 model with several optimizers (OptimWrapperDict)"
        )
    checkpoint: dict[str, Any] = {"meta": meta}
    if saves_sharded_state(model):
        shards = sharded_state_dir(os.path.basename(path))
        optimizer = optim_wrapper.optimizer if save_optimizer else None
        save_sharded_state(os.path.join(os.path.dirname(path), shards), model, optimizer)
        meta[SHARDED_STATE] = shards
    else:
        checkpoint["state_dict"] = (
            full_model_state_dict(model) if sharded else weights_to_cpu(model.state_dict())
        )
    checkpoint["message_hub"] = runner.message_hub.state_dict()
    if save_optimizer:
        state = optim_wrapper.state_dict()
        if SHARDED_STATE in meta:
            state.pop("state", None)  # in the sharded state directory
        elif sharded:
            # by parameter name, unsharded: it loads at any world size, with or without FSDP2
            state.update(full_optimizer_state_dict(model, optim_wrapper.optimizer))
            meta[OPTIMIZER_STATE_BY_NAME] = True
        checkpoint["optimizer"] = _to_cpu(state)
    if save_param_scheduler:
        checkpoint["param_schedulers"] = scheduler_states(runner.param_schedulers)
    if runner.train_loop_built:
        sampler = loader_sampler(runner.train_dataloader)
        if hasattr(sampler, "state_dict"):
            checkpoint["train_dataloader"] = {"sampler": sampler.state_dict()}
    checkpoint["rng_state"] = dist.all_gather_object(get_rng_state())
    return checkpoint


def write_last_checkpoint(work_dir: str, path: str, sha256: str | None = None) -> None:
    """Record ``path`` (and its checksum) in ``work_dir/last_checkpoint``, atomically."""
    target = os.path.join(work_dir, LAST_CHECKPOINT_FILE)
    text = format_last_checkpoint(path, sha256)
    atomic_write(target, lambda f: f.write(text), mode="w", encoding="utf-8")


# ------------------------------------------------------------------------------ restoring
def resume_source(
    runner: Runner, load_from: str | None, resume: bool, resume_from: str | None
) -> str | None:
    """The checkpoint to resume from: ``resume_from`` (a path given as ``resume``), else with
    ``resume`` the latest of the work dir (checked against the checksum ``last_checkpoint``
    recorded) or ``load_from``; None when nothing is resumed."""
    if resume_from is not None:
        return resume_from
    if not resume:
        return None
    if load_from is not None:
        return load_from
    record = read_last_checkpoint(runner.work_dir)
    if record is None:
        runner.logger.info(f"No checkpoint found in {runner.work_dir}: training from scratch.")
        return None
    # against the checksum last_checkpoint recorded, too (cached: loading does not hash the
    # file again)
    verify_checkpoint(record.path, record.sha256)
    runner.logger.info(f"Auto resumed from the latest checkpoint {record.path}.")
    return record.path


def sharded_state_of(filename: str, checkpoint: Mapping[str, Any]) -> str | None:
    """The sharded state directory a checkpoint file names (next to the file), if any."""
    meta = checkpoint.get("meta")
    name = meta.get(SHARDED_STATE) if isinstance(meta, Mapping) else None
    return None if name is None else os.path.join(os.path.dirname(filename), name)


def restore_checkpoint(
    runner: Runner,
    filename: str,
    checkpoint: Mapping[str, Any],
    resume_optimizer: bool,
    resume_param_scheduler: bool,
) -> None:
    """Put a loaded checkpoint's training state (the weights are loaded already) back into
    ``runner``: counters, seed, message hub, optimizer (and loss scaler), schedulers, the
    train sampler's state and, last, every RNG state."""
    meta = checkpoint.get("meta", {})
    if runner.train_loop_configured:
        runner.train_loop.restore_progress(int(meta["epoch"]), int(meta["iter"]))

    resumed_seed = meta.get("seed")
    current_seed = runner.randomness_cfg.get("seed")
    if resumed_seed is not None and resumed_seed != current_seed:
        if current_seed is not None:
            runner.logger.warning(
                f'The value of random seed in the checkpoint "{resumed_seed}" is different '
                f'from the value in `randomness` config "{current_seed}"'
            )
        runner.randomness_cfg.update(seed=resumed_seed)
        runner.set_randomness(**runner.randomness_cfg)

    if runner.train_loop_configured:
        dataset_meta = getattr(runner.train_dataloader.dataset, "metainfo", None)
        if "dataset_meta" in meta and to_weights_only(dataset_meta) != meta["dataset_meta"]:
            runner.logger.warning(
                "The dataset metainfo from the resumed checkpoint is different from the "
                "current training dataset, please check the correctness of the checkpoint "
                "or the training dataset."
            )
    if "message_hub" in checkpoint:
        runner.message_hub.load_state_dict(checkpoint["message_hub"])

    if "optimizer" in checkpoint and resume_optimizer and runner.optim_wrapper is not None:
        runner.optim_wrapper = runner.build_optim_wrapper(runner.optim_wrapper)
        state = checkpoint["optimizer"]
        shards = sharded_state_of(filename, checkpoint)
        optimizer = runner.optim_wrapper.optimizer
        # saved by an FSDP2 run, at any world size: read in this run's layout, then loaded
        # again with the wrapper's own state (a loss scaler)
        if shards is not None:
            load_sharded_optimizer_state(shards, unwrap_model(runner.model), optimizer)
            state = {**state, **optimizer.state_dict()}
        elif meta.get(OPTIMIZER_STATE_BY_NAME):
            load_full_optimizer_state_dict(unwrap_model(runner.model), optimizer, state)
            state = {**state, **optimizer.state_dict()}
        runner.optim_wrapper.load_state_dict(state)

    if resume_param_scheduler and runner.param_schedulers is None:
        runner.logger.warning(
            "`resume_param_scheduler` is True but `self.param_schedulers` is None, so skip "
            "resuming parameter schedulers"
        )
        resume_param_scheduler = False
    if "param_schedulers" in checkpoint and resume_param_scheduler:
        runner.param_schedulers = runner.build_param_scheduler(runner.param_schedulers)
        load_scheduler_states(
            runner.param_schedulers, checkpoint["param_schedulers"], runner.logger
        )

    if runner.train_loop_configured and "train_dataloader" in checkpoint:
        sampler = loader_sampler(runner.train_dataloader)
        state = checkpoint["train_dataloader"].get("sampler")
        if state is not None and hasattr(sampler, "load_state_dict"):
            sampler.load_state_dict(state)

    rng = checkpoint.get("rng_state")
    if rng:
        world_size, rank = runner.world_size, runner.rank
        if len(rng) != world_size:
            runner.logger.warning(
                f"the checkpoint holds RNG states of {len(rng)} processes but {world_size} "
                "run now: every process continues from rank 0's state"
            )
        set_rng_state(rng[rank] if len(rng) == world_size else rng[0])


def load_scheduler_states(schedulers: list | dict, states: Any, logger: Any) -> None:
    """Load :func:`scheduler_states` output into ``schedulers`` (a list, or a dict of lists)."""
    if isinstance(schedulers, dict):
        for name, group in schedulers.items():
            saved = states.get(name, []) if isinstance(states, Mapping) else []
            _load_scheduler_list(group, saved, name, logger)
    else:
        _load_scheduler_list(schedulers, states, None, logger)


def _load_scheduler_list(schedulers: list, states: list, name: str | None, logger: Any) -> None:
    where = f" of optimizer {name!r}" if name else ""
    if len(states) != len(schedulers):
        logger.warning(
            f"the checkpoint has {len(states)} parameter schedulers{where} but the config "
            f"builds {len(schedulers)}; restoring the first {min(len(states), len(schedulers))}"
        )
    for scheduler, state in zip(schedulers, states):
        saved_type = state.get("_type") if isinstance(state, Mapping) else None
        if saved_type is not None and saved_type != type(scheduler).__name__:
            raise RuntimeError(
                f"cannot resume: the checkpoint's scheduler{where} is {saved_type} but the "
                f"config builds {type(scheduler).__name__} at that position"
            )
        state = {k: v for k, v in state.items() if k != "_type"}
        scheduler.load_state_dict(state)
