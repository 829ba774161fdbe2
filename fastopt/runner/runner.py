"""``Runner``: builds a training run from config pieces and drives it through hooks.

Constructor arguments, build order, hook points, counters, checkpoint layout and log format
are MMEngine's, so a config or a hook written for MMEngine runs here. What differs, on
purpose (each one an open MMEngine issue):

* no ``default_scope`` is needed: fastopt's registries find their own classes;
* checkpoints are written atomically and load with ``torch.load(weights_only=True)``;
* a checkpoint also holds the RNG states and the train sampler's state, and a resumed run
  starts the data loader at the right batch instead of replaying it: training N iterations
  straight and training k, stopping, resuming and finishing give identical parameters;
* best checkpoints keep the optimizer state and can be resumed from;
* ``resume`` may be a checkpoint path;
* two runners created in the same second get distinct experiment names and log dirs.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import platform
import sys
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

import fastopt
from fastopt.config import Config
from fastopt.dataset import build_dataloader as _build_dataloader
from fastopt.dataset import loader_sampler
from fastopt.evaluator import BaseMetric, Evaluator
from fastopt.hooks import Hook
from fastopt.hooks.priority import get_priority, priority_name
from fastopt.logging import MessageHub
from fastopt.loops import BaseLoop, EpochBasedTrainLoop, IterBasedTrainLoop, TestLoop, ValLoop
from fastopt.model import (
    MMDistributedDataParallel,
    convert_sync_batchnorm,
    is_model_wrapper,
    revert_sync_batchnorm,
    unwrap_model,
)
from fastopt.model.fsdp import (
    OPTIMIZER_STATE_BY_NAME,
    SHARDED_STATE,
    full_model_state_dict,
    full_optimizer_state_dict,
    is_fully_sharded,
    load_full_optimizer_state_dict,
    load_sharded_model_state,
    load_sharded_optimizer_state,
    save_sharded_state,
    saves_sharded_state,
    sharded_state_dir,
)
from fastopt.ops.dtensor import is_dtensor
from fastopt.registry import (
    EVALUATOR,
    HOOKS,
    LOG_PROCESSORS,
    LOOPS,
    MODEL_WRAPPERS,
    MODELS,
    OPTIM_WRAPPERS,
    RUNNERS,
    VISUALIZERS,
    DefaultScope,
)
from fastopt.scheduler import _ParamScheduler, build_param_schedulers
from fastopt.visualization import Visualizer
from fastopt.wrapper import OptimWrapper, OptimWrapperDict

from . import dist
from .checkpoint import (
    LAST_CHECKPOINT_FILE,
    atomic_write,
    format_last_checkpoint,
    load_checkpoint_file,
    load_model_state,
    read_last_checkpoint,
    revise_state_dict,
    save_checkpoint,
    to_weights_only,
    verify_checkpoint,
    weights_to_cpu,
)
from .log_processor import LogProcessor
from .logger import FILE_ONLY, activate, build_run_logger, close_run_logger, deactivate
from .randomness import get_rng_state, set_random_seed, set_rng_state
from .run_length import check_schedules_fit

ConfigType = Mapping[str, Any]

DEFAULT_HOOKS: dict[str, dict[str, Any]] = {
    "runtime_info": dict(type="RuntimeInfoHook"),
    "timer": dict(type="IterTimerHook"),
    "sampler_seed": dict(type="DistSamplerSeedHook"),
    "logger": dict(type="LoggerHook"),
    "param_scheduler": dict(type="ParamSchedulerHook"),
    "checkpoint": dict(type="CheckpointHook", interval=1),
}


def _logged_phase(method: Any) -> Any:
    """Run a phase (train/val/test) with the runner's logger receiving fastopt's library
    records, and only then: once the phase ends, a later record (after the work dir is
    gone, say) does not go to this run's log file."""

    @functools.wraps(method)
    def run_phase(self: Runner, *args: Any, **kwargs: Any) -> Any:
        activate(self.logger)
        depth = getattr(self, "_phase_depth", 0)  # a hook may run test() inside train()
        self._phase_depth = depth + 1
        try:
            return method(self, *args, **kwargs)
        finally:
            self._phase_depth = depth
            if depth == 0:
                deactivate(self.logger)

    return run_phase


def _device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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


def _sharded_state_of(filename: str, checkpoint: Mapping[str, Any]) -> str | None:
    """The sharded state directory a checkpoint file names (next to the file), if any."""
    meta = checkpoint.get("meta")
    name = meta.get(SHARDED_STATE) if isinstance(meta, Mapping) else None
    return None if name is None else os.path.join(os.path.dirname(filename), name)


@RUNNERS.register_module()
class Runner:
    """Build and run training, validation and testing (MMEngine's ``Runner`` API).

    Args:
        model: an ``nn.Module`` or a ``MODELS`` config. A ``BaseModel`` (or any module with
            ``train_step``) is driven through its step methods; a plain module whose forward
            returns a dict of losses (or a loss tensor) trains too.
        work_dir: checkpoints, the dumped config and the log dir ``<work_dir>/<timestamp>``.
        train_dataloader, val_dataloader, test_dataloader: ``DataLoader`` objects or configs
            (``dataset``, ``sampler``, ``batch_size``, ...).
        train_cfg: ``dict(type='EpochBasedTrainLoop', max_epochs=...)``,
            ``dict(by_epoch=False, max_iters=...)``, or a built loop.
        val_cfg, test_cfg: ``dict()`` (``ValLoop``/``TestLoop``) or loop configs.
        auto_scale_lr: ``dict(enable=True, base_batch_size=B)``: multiply every lr by
            ``world_size * batch_size / B``.
        optim_wrapper: an ``OptimWrapper`` or an ``optim_wrapper`` config.
        param_scheduler: scheduler configs (a dict, a list, or a dict of lists for several
            optimizers) or built schedulers.
        val_evaluator, test_evaluator: an ``Evaluator``, a metric config or a list of them.
        default_hooks: overrides of :data:`DEFAULT_HOOKS` by name (``None`` removes one).
        custom_hooks: more hooks (configs with an optional ``priority``, or objects).
        data_preprocessor: merged into a ``model`` config as its ``data_preprocessor``.
        load_from: a checkpoint whose weights are loaded before training/testing.
        resume: True: resume from ``load_from``, or from the latest checkpoint of
            ``work_dir`` when ``load_from`` is None; a path: resume from it.
        launcher: ``'none'`` or ``'pytorch'`` (``torchrun``; gloo on CPU, NCCL on GPU).
        env_cfg: ``cudnn_benchmark``, ``mp_cfg`` and ``dist_cfg`` (process-group arguments).
        log_processor: ``LogProcessor`` arguments.
        log_level: level of the terminal and file logs.
        visualizer: a ``Visualizer`` or its config (``vis_backends=[dict(type=
            'LocalVisBackend'), dict(type='TensorboardVisBackend')]``).
        default_scope: optional registry scope (not needed for fastopt's own types).
        randomness: ``dict(seed=None, deterministic=False, diff_rank_seed=False)``.
        experiment_name: prefix of the experiment name (default: the config file name).
        cfg: the full config (dumped into the work dir and stored in checkpoints).
    """

    def __init__(
        self,
        model: nn.Module | dict,
        work_dir: str,
        train_dataloader: DataLoader | dict | None = None,
        val_dataloader: DataLoader | dict | None = None,
        test_dataloader: DataLoader | dict | None = None,
        train_cfg: dict | BaseLoop | None = None,
        val_cfg: dict | BaseLoop | None = None,
        test_cfg: dict | BaseLoop | None = None,
        auto_scale_lr: dict | None = None,
        optim_wrapper: OptimWrapper | dict | None = None,
        param_scheduler: _ParamScheduler | dict | list | None = None,
        val_evaluator: Evaluator | dict | list | None = None,
        test_evaluator: Evaluator | dict | list | None = None,
        default_hooks: dict[str, Hook | dict | None] | None = None,
        custom_hooks: list[Hook | dict] | None = None,
        data_preprocessor: nn.Module | dict | None = None,
        load_from: str | None = None,
        resume: bool | str = False,
        launcher: str = "none",
        env_cfg: dict | None = None,
        log_processor: dict | None = None,
        log_level: str | int = "INFO",
        visualizer: Visualizer | dict | None = None,
        default_scope: str | None = None,
        randomness: dict | None = None,
        experiment_name: str | None = None,
        cfg: ConfigType | None = None,
    ) -> None:
        self._work_dir = os.path.abspath(os.fspath(work_dir))
        os.makedirs(self._work_dir, exist_ok=True)
        if isinstance(cfg, Config):
            self.cfg = copy.deepcopy(cfg)
        elif isinstance(cfg, Mapping):
            self.cfg = Config(dict(cfg))
        elif cfg is None:
            self.cfg = Config()
        else:
            raise TypeError(f"cfg should be a Config, a dict or None, but got {type(cfg).__name__}")

        self._check_group(
            train_dataloader=train_dataloader,
            train_cfg=train_cfg,
            optim_wrapper=optim_wrapper,
        )
        self._train_dataloader = train_dataloader
        self._train_loop: Any = train_cfg
        self.optim_wrapper: Any = optim_wrapper
        self.auto_scale_lr = auto_scale_lr
        if param_scheduler is not None and optim_wrapper is None:
            raise ValueError(
                f"param_scheduler should be None when optim_wrapper is None, but got {param_scheduler}"
            )
        self._check_scheduler_cfg(param_scheduler)
        self.param_schedulers: Any = param_scheduler

        self._check_group(
            val_dataloader=val_dataloader, val_cfg=val_cfg, val_evaluator=val_evaluator
        )
        self._val_dataloader = val_dataloader
        self._val_loop: Any = val_cfg
        self._val_evaluator = val_evaluator
        self._check_group(
            test_dataloader=test_dataloader,
            test_cfg=test_cfg,
            test_evaluator=test_evaluator,
        )
        self._test_dataloader = test_dataloader
        self._test_loop: Any = test_cfg
        self._test_evaluator = test_evaluator

        if launcher not in dist.LAUNCHERS:
            raise ValueError(
                f"launcher should be one of {dist.LAUNCHERS}, but got {launcher!r} (slurm and mpi "
                "are not supported yet: start the processes with torchrun)"
            )
        self._launcher = launcher
        self._distributed = launcher != "none"
        env_cfg = dict(dist_cfg=dict(backend="nccl")) if env_cfg is None else dict(env_cfg)
        self.setup_env(env_cfg)

        self._randomness_cfg = dict(randomness) if randomness is not None else dict(seed=None)
        self.set_randomness(**self._randomness_cfg)

        self._experiment_name = self._unique_experiment_name(experiment_name)
        self._log_dir = self._make_log_dir()
        self.default_scope = (
            DefaultScope.get_instance(self._experiment_name, scope_name=default_scope)
            if default_scope is not None
            else None
        )
        self.log_processor = self.build_log_processor(log_processor or {})
        self.logger = self.build_logger(log_level)
        self._log_env(env_cfg)
        self.message_hub = self.build_message_hub()
        self.visualizer = self.build_visualizer(visualizer)
        if self.cfg:
            try:
                self.visualizer.add_config(self.cfg)
            except TypeError as e:  # objects in the config have no source form
                self.logger.warning(f"the config is not recorded in the vis backends: {e}")

        self._load_from = load_from
        if not isinstance(resume, (bool, str, os.PathLike)):
            raise TypeError(f"resume should be a bool or a checkpoint path, but got {resume!r}")
        self._resume = bool(resume)
        self._resume_from = os.fspath(resume) if isinstance(resume, (str, os.PathLike)) else None
        self._has_loaded = False
        self._warned_no_schedulers = False
        self._train_prepared = False

        if isinstance(model, dict) and data_preprocessor is not None:
            model = dict(model)
            model.setdefault("data_preprocessor", data_preprocessor)
        self.model = self.build_model(model)
        self.model = self.wrap_model(self.cfg.get("model_wrapper_cfg"), self.model)
        self._model_name = type(unwrap_model(self.model)).__name__

        self._hooks: list[Hook] = []
        self.register_hooks(default_hooks, custom_hooks)
        self.logger.info(
            f"Hooks will be executed in the following order:\n{self.get_hooks_info()}",
            extra=FILE_ONLY,
        )
        self.dump_config()

    # ----------------------------------------------------------------------- from_cfg
    @classmethod
    def from_cfg(cls, cfg: ConfigType) -> Runner:
        """Build a runner from a full config (MMEngine's keys; MMCV 1.x keys are translated)."""
        from fastopt.config import translate_legacy_config

        if not isinstance(cfg, Mapping):
            raise TypeError(f"cfg should be a Config or a dict, but got {type(cfg).__name__}")
        config = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(dict(cfg))
        translated = translate_legacy_config(config.to_dict(), config.filename)
        if translated != config.to_dict():
            config = Config(translated, cfg_text=config.text, filename=config.filename)
        for key in ("model", "work_dir"):
            if key not in config:
                raise KeyError(f"the config has no `{key}`; a runner needs model and work_dir")
        return cls(
            model=config["model"],
            work_dir=config["work_dir"],
            train_dataloader=config.get("train_dataloader"),
            val_dataloader=config.get("val_dataloader"),
            test_dataloader=config.get("test_dataloader"),
            train_cfg=config.get("train_cfg"),
            val_cfg=config.get("val_cfg"),
            test_cfg=config.get("test_cfg"),
            auto_scale_lr=config.get("auto_scale_lr"),
            optim_wrapper=config.get("optim_wrapper"),
            param_scheduler=config.get("param_scheduler"),
            val_evaluator=config.get("val_evaluator"),
            test_evaluator=config.get("test_evaluator"),
            default_hooks=config.get("default_hooks"),
            custom_hooks=config.get("custom_hooks"),
            data_preprocessor=config.get("data_preprocessor"),
            load_from=config.get("load_from"),
            resume=config.get("resume", False),
            launcher=config.get("launcher", "none"),
            env_cfg=config.get("env_cfg", dict(dist_cfg=dict(backend="nccl"))),
            log_processor=config.get("log_processor"),
            log_level=config.get("log_level", "INFO"),
            visualizer=config.get("visualizer"),
            default_scope=config.get("default_scope"),
            randomness=config.get("randomness", dict(seed=None)),
            experiment_name=config.get("experiment_name"),
            cfg=config,
        )

    # --------------------------------------------------------------------- properties
    @property
    def experiment_name(self) -> str:
        return self._experiment_name

    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def work_dir(self) -> str:
        return self._work_dir

    @property
    def log_dir(self) -> str:
        return self._log_dir

    @property
    def timestamp(self) -> str:
        return self._timestamp

    @property
    def launcher(self) -> str:
        return self._launcher

    @property
    def distributed(self) -> bool:
        return self._distributed

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def world_size(self) -> int:
        return self._world_size

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def deterministic(self) -> bool:
        return self._deterministic

    @property
    def randomness_cfg(self) -> dict[str, Any]:
        """The ``randomness`` settings (seed, deterministic, diff_rank_seed)."""
        return self._randomness_cfg

    @property
    def resuming(self) -> bool:
        """Whether checkpoints are loaded to resume (not only for their weights)."""
        return self._resume

    @property
    def hooks(self) -> list[Hook]:
        return self._hooks

    @property
    def train_loop_configured(self) -> bool:
        """Whether this runner has a training loop (built or still a config)."""
        return self._train_loop is not None

    @property
    def train_loop_built(self) -> bool:
        """Whether the training loop has been built (``train()`` builds it)."""
        return isinstance(self._train_loop, BaseLoop)

    @property
    def train_loop(self) -> Any:
        """The training loop, built on first access."""
        if self._train_loop is None:
            raise RuntimeError(
                "this runner has no training loop: pass train_dataloader, train_cfg and "
                "optim_wrapper"
            )
        if not isinstance(self._train_loop, BaseLoop):
            self._train_loop = self.build_train_loop(self._train_loop)
        return self._train_loop

    @property
    def val_loop(self) -> Any:
        """The validation loop (built on first access), or None."""
        if self._val_loop is not None and not isinstance(self._val_loop, BaseLoop):
            self._val_loop = self.build_val_loop(self._val_loop)
        return self._val_loop

    @property
    def test_loop(self) -> Any:
        """The test loop (built on first access), or None."""
        if self._test_loop is not None and not isinstance(self._test_loop, BaseLoop):
            self._test_loop = self.build_test_loop(self._test_loop)
        return self._test_loop

    @property
    def max_epochs(self) -> int:
        return self.train_loop.max_epochs if self.train_loop_configured else 0

    @property
    def max_iters(self) -> int:
        return self.train_loop.max_iters if self.train_loop_configured else 0

    @property
    def epoch(self) -> int:
        """Completed training epochs (0 without a training loop)."""
        return self.train_loop.epoch if self.train_loop_configured else 0

    @property
    def iter(self) -> int:
        """Completed training iterations (0 without a training loop)."""
        return self.train_loop.iter if self.train_loop_configured else 0

    @property
    def train_dataloader(self) -> DataLoader:
        return self.train_loop.dataloader

    @property
    def val_dataloader(self) -> DataLoader:
        return self.val_loop.dataloader

    @property
    def test_dataloader(self) -> DataLoader:
        return self.test_loop.dataloader

    @property
    def val_evaluator(self) -> Evaluator:
        return self.val_loop.evaluator

    @property
    def test_evaluator(self) -> Evaluator:
        return self.test_loop.evaluator

    @property
    def val_interval(self) -> int:
        return self.train_loop.val_interval

    @property
    def val_begin(self) -> int:
        return self.train_loop.val_begin

    # ---------------------------------------------------------------- environment
    @staticmethod
    def _check_group(**items: Any) -> None:
        """A phase needs its dataloader, loop config and optimizer/evaluator together."""
        given = [v is not None for v in items.values()]
        if any(given) and not all(given):
            shown = ", ".join(f"{k}={v!r}" for k, v in items.items())
            names = ", ".join(items)
            raise ValueError(f"{names} should be either all None or not None, but got {shown}.")

    def setup_env(self, env_cfg: dict) -> None:
        """cuDNN benchmark, multiprocessing start method, process group, timestamp."""
        if env_cfg.get("cudnn_benchmark"):
            torch.backends.cudnn.benchmark = True
        mp_cfg = dict(env_cfg.get("mp_cfg", {}))
        method = mp_cfg.pop("mp_start_method", None)
        if method is not None and platform.system() != "Windows":
            import torch.multiprocessing as mp

            if mp.get_start_method(allow_none=True) != method:
                mp.set_start_method(method, force=True)
        threads = mp_cfg.pop("opencv_num_threads", None)
        if threads is not None:
            try:
                import cv2

                cv2.setNumThreads(threads)
            except ImportError:
                pass
        if self._distributed and not dist.is_distributed():
            dist.init_dist(self._launcher, **dict(env_cfg.get("dist_cfg", {})))
        self._rank, self._world_size = dist.get_dist_info()
        stamp = torch.tensor(time.time(), dtype=torch.float64)
        dist.broadcast(stamp)
        self._timestamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(stamp.item()))

    def set_randomness(
        self, seed: int | None = None, diff_rank_seed: bool = False, deterministic: bool = False
    ) -> None:
        """Seed every generator (see :func:`fastopt.runner.randomness.set_random_seed`)."""
        self._deterministic = deterministic
        self._seed = set_random_seed(seed, deterministic, diff_rank_seed)

    def _unique_experiment_name(self, experiment_name: str | None) -> str:
        if experiment_name is not None:
            base = f"{experiment_name}_{self._timestamp}"
        elif self.cfg.filename is not None:
            stem = os.path.splitext(os.path.basename(self.cfg.filename))[0]
            base = f"{stem}_{self._timestamp}"
        else:
            base = self._timestamp
        name, n = base, 0
        # runners made in the same second must not share a message hub or a logger
        while MessageHub.check_instance_created(name) or Visualizer.check_instance_created(name):
            n += 1
            name = f"{base}_{n}"
        return name

    def _make_log_dir(self) -> str:
        log_dir = None
        if dist.is_main_process():
            log_dir = os.path.join(self._work_dir, self._timestamp)
            n = 0
            while os.path.exists(log_dir):
                n += 1
                log_dir = os.path.join(self._work_dir, f"{self._timestamp}_{n}")
            os.makedirs(log_dir)
        log_dir = dist.broadcast_object(log_dir)
        os.makedirs(log_dir, exist_ok=True)
        return log_dir

    def build_logger(
        self, log_level: str | int = "INFO", log_file: str | None = None
    ) -> logging.Logger:
        """The run's logger (terminal + ``<log_dir>/<timestamp>.log`` on rank 0)."""
        if log_file is None:
            log_file = os.path.join(self._log_dir, f"{self._timestamp}.log")
        return build_run_logger(self._experiment_name, log_file, log_level, rank=self._rank)

    def build_message_hub(self, message_hub: dict | None = None) -> MessageHub:
        """The run's message hub: ``MessageHub.get_instance(**message_hub)``, named after
        the experiment unless ``message_hub`` gives a ``name``."""
        if message_hub is None:
            message_hub = {}
        elif not isinstance(message_hub, Mapping):
            raise TypeError(
                f"message_hub should be a dict or None, but got {type(message_hub).__name__}"
            )
        cfg = dict(message_hub)
        cfg.setdefault("name", self._experiment_name)
        return MessageHub.get_instance(**cfg)

    def build_log_processor(self, log_processor: LogProcessor | dict) -> LogProcessor:
        """A ``LogProcessor`` from its arguments (``type`` optional)."""
        if isinstance(log_processor, LogProcessor):
            return log_processor
        if not isinstance(log_processor, Mapping):
            raise TypeError(
                f"log_processor should be a LogProcessor or a dict, but got {type(log_processor)}"
            )
        cfg = dict(log_processor)
        cfg.setdefault("type", "LogProcessor")
        return LOG_PROCESSORS.build(cfg)

    def build_visualizer(self, visualizer: Visualizer | dict | None = None) -> Visualizer:
        """The run's visualizer (default: JSON scalars in ``<log_dir>/vis_data``)."""
        save_dir = os.path.join(self._log_dir, "vis_data")
        if visualizer is None:
            return Visualizer.get_instance(
                self._experiment_name,
                vis_backends=[dict(type="LocalVisBackend")],
                save_dir=save_dir,
            )
        if isinstance(visualizer, Visualizer):
            return visualizer
        if isinstance(visualizer, Mapping):
            cfg = dict(visualizer)
            cfg.setdefault("type", "Visualizer")
            cfg["name"] = (
                self._experiment_name if cfg.get("name") in (None, "visualizer") else cfg["name"]
            )
            cfg.setdefault("save_dir", save_dir)
            return VISUALIZERS.build(cfg)  # a ManagerMixin: get_instance, with its _scope_
        raise TypeError(
            f"visualizer should be a Visualizer, a dict or None, but got {type(visualizer).__name__}"
        )

    def _dist_cfg_used(self, env_cfg: dict) -> str:
        """``dist_cfg`` as this run uses it: the backend the process group really has, or
        that one process needs none (the config's ``nccl`` means nothing on a CPU run)."""
        if not self._distributed:
            return "not used (one process, launcher none)"
        used = dict(env_cfg.get("dist_cfg") or {})
        if dist.is_distributed():
            used["backend"] = torch.distributed.get_backend()
        return f"{used}"

    def _log_env(self, env_cfg: dict) -> None:
        env = [
            f"    {k}: {self._dist_cfg_used(env_cfg) if k == 'dist_cfg' else v}"
            for k, v in env_cfg.items()
        ]
        lines = [
            "System environment:",
            f"    sys.platform: {sys.platform}",
            f"    Python: {sys.version.split()[0]}",
            f"    PyTorch: {torch.__version__}",
            f"    fastopt: {fastopt.__version__}",
            f"    CUDA available: {torch.cuda.is_available()}",
            "Runtime environment:",
            *env,
            f"    seed: {self._seed}",
            f"    deterministic: {self._deterministic}",
            f"    Distributed launcher: {self._launcher}",
            f"    Distributed training: {self._distributed}",
            f"    World size: {self._world_size}",
        ]
        dash = "-" * 60
        text = "\n" + dash + "\n" + "\n".join(lines) + "\n" + dash + "\n"
        self.logger.info(text, extra=FILE_ONLY)
        if self.cfg:
            self.logger.info(f"Config:\n{self.cfg_text}", extra=FILE_ONLY)

    @property
    def cfg_text(self) -> str:
        """The config as Python source (its repr when it holds objects that have none)."""
        try:
            return self.cfg.pretty_text
        except Exception:  # a config holding objects cannot always be formatted as source
            return repr(self.cfg.to_dict())

    # ------------------------------------------------------------------------- model
    def build_model(self, model: nn.Module | dict) -> nn.Module:
        """``model`` itself, or the module its config describes."""
        if isinstance(model, nn.Module):
            return model
        if isinstance(model, Mapping):
            return MODELS.build(model)
        raise TypeError(f"model should be an nn.Module or a dict, but got {type(model).__name__}")

    def wrap_model(self, model_wrapper_cfg: dict | None, model: nn.Module) -> nn.Module:
        """Move the model to the device; in distributed training, wrap it in DDP.

        A ``BaseModel`` gets :class:`~fastopt.model.MMDistributedDataParallel` (keeps
        ``train_step``); a plain module torch's ``DistributedDataParallel``.
        """
        if is_model_wrapper(model):
            if model_wrapper_cfg is not None:
                raise TypeError(
                    "model has been wrapped and model_wrapper_cfg should be None, but got "
                    f"{model_wrapper_cfg}"
                )
            return model
        device = _device()
        model = model.to(device)
        if not self._distributed:
            # SyncBatchNorm needs a process group: in one process it is a plain BatchNorm
            if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()):
                self.logger.info(
                    "Distributed training is not used: the SyncBatchNorm layers of the model "
                    "are reverted to BatchNorm layers."
                )
                model = revert_sync_batchnorm(model)
            return model
        sync_bn = self.cfg.get("sync_bn")
        if sync_bn is not None:
            model = convert_sync_batchnorm(model, sync_bn)
        device_ids = [device.index] if device.type == "cuda" else None
        if model_wrapper_cfg is None:
            wrapper_cls = (
                MMDistributedDataParallel
                if hasattr(model, "train_step")
                else DistributedDataParallel
            )
            # buffers are not broadcast every forward (SyncBuffersHook averages them);
            # torch 2.13 renamed the switch and warns on the old name
            no_buffer_sync = (
                "forward_sync_buffers"
                if "forward_sync_buffers" in inspect.signature(wrapper_cls.__init__).parameters
                else "broadcast_buffers"
            )
            return wrapper_cls(
                module=model,
                device_ids=device_ids,
                find_unused_parameters=bool(self.cfg.get("find_unused_parameters", False)),
                **{no_buffer_sync: False},
            )
        cfg = dict(model_wrapper_cfg)
        cfg.setdefault("type", "MMDistributedDataParallel")
        cfg.setdefault("device_ids", device_ids)
        return MODEL_WRAPPERS.build(cfg, default_args=dict(module=model))

    def _init_model_weights(self) -> None:
        model = unwrap_model(self.model)
        if hasattr(model, "init_weights"):
            model.init_weights()
            for tensor in model.state_dict().values():
                if not is_dtensor(tensor):  # FSDP2 shards: each rank owns its own
                    dist.broadcast(tensor)

    # ---------------------------------------------------------------- optimization
    def build_optim_wrapper(self, optim_wrapper: OptimWrapper | dict) -> OptimWrapper:
        """``optim_wrapper`` itself, or the wrapper (or ``OptimWrapperDict``) its config gives."""
        if isinstance(optim_wrapper, OptimWrapper):
            wrappers = (
                optim_wrapper.values()
                if isinstance(optim_wrapper, OptimWrapperDict)
                else [optim_wrapper]
            )
            for wrapper in wrappers:
                wrapper.message_hub = self.message_hub  # grad_norm must reach this run's logs
            return optim_wrapper
        if not isinstance(optim_wrapper, Mapping):
            raise TypeError(
                "optim_wrapper should be an OptimWrapper or a dict, but got "
                f"{type(optim_wrapper).__name__}"
            )
        from fastopt.constructor import build_optim_wrapper

        # a ConfigDict's copy knows its config file and key, for error messages
        cfg = optim_wrapper.copy() if isinstance(optim_wrapper, dict) else dict(optim_wrapper)
        optimizer = cfg.get("optimizer")
        if isinstance(optimizer, torch.optim.Optimizer):
            cfg.setdefault("type", "OptimWrapper")
            return OPTIM_WRAPPERS.build(cfg)
        if optimizer is not None or "constructor" in cfg:
            return build_optim_wrapper(self.model, cfg)
        wrappers: OrderedDict[str, OptimWrapper] = OrderedDict()
        for name, optim in cfg.items():
            if not isinstance(optim, OptimWrapper):
                raise ValueError(
                    'each item must be an optimizer wrapper when "type" and "constructor" are not '
                    f"in optimizer, but got {name}={optim}"
                )
            wrappers[name] = optim
        return OptimWrapperDict(**wrappers)

    def scale_lr(self, optim_wrapper: OptimWrapper, auto_scale_lr: dict | None = None) -> None:
        """Linear scaling rule: every lr times ``world_size * batch_size / base_batch_size``."""
        if auto_scale_lr is None or not auto_scale_lr.get("enable", False):
            return
        base = auto_scale_lr.get("base_batch_size")
        if not isinstance(base, int) or base <= 0:
            raise ValueError(
                "auto_scale_lr needs a positive int base_batch_size, e.g. "
                f"dict(enable=True, base_batch_size=256); got {auto_scale_lr}"
            )
        if isinstance(self.param_schedulers, list) and any(
            isinstance(s, _ParamScheduler) for s in self.param_schedulers
        ):
            raise RuntimeError(
                "`scale_lr` should be called before building ParamScheduler because "
                "ParamScheduler will store initial lr from optimizer wrappers"
            )
        batch_size = self.train_dataloader.batch_size
        if batch_size is None:
            batch_size = getattr(self.train_dataloader.batch_sampler, "batch_size", None)
        if batch_size is None:
            raise RuntimeError("auto_scale_lr cannot find the training batch size")
        ratio = self._world_size * batch_size / base
        wrappers = (
            optim_wrapper.values()
            if isinstance(optim_wrapper, OptimWrapperDict)
            else [optim_wrapper]
        )
        for wrapper in wrappers:
            for group in wrapper.param_groups:  # includes the base-settings pseudo group
                group["lr"] = group["lr"] * ratio
        self.logger.info(
            f"LR is scaled by {ratio:g} (world_size {self._world_size} x batch_size {batch_size} "
            f"/ base_batch_size {base})"
        )

    def _check_scheduler_cfg(self, param_scheduler: Any) -> None:
        if param_scheduler is None or isinstance(param_scheduler, _ParamScheduler):
            return
        if isinstance(param_scheduler, Mapping):
            if "type" in param_scheduler:
                return
            for name, value in param_scheduler.items():  # one entry per optimizer
                if not isinstance(value, (Mapping, list, tuple, _ParamScheduler)):
                    raise TypeError(
                        f"param_scheduler[{name!r}] should be a scheduler, a config or a list, "
                        f"but got {type(value).__name__}"
                    )
            return
        if isinstance(param_scheduler, (list, tuple)):
            for item in param_scheduler:
                if not isinstance(item, (Mapping, _ParamScheduler)):
                    raise TypeError(
                        "param_scheduler entries should be configs or schedulers, but got "
                        f"{type(item).__name__}"
                    )
            return
        raise TypeError(
            "param_scheduler should be a scheduler, a config, or a list/dict of them, but got "
            f"{type(param_scheduler).__name__}"
        )

    def build_param_scheduler(self, scheduler: Any) -> list | dict:
        """Build the schedulers of every optimizer; ``end`` defaults to the training length."""
        if not isinstance(self.optim_wrapper, OptimWrapper):
            raise RuntimeError("build the optim_wrapper before the parameter schedulers")
        kwargs: dict[str, Any] = {}
        if self.train_loop_built:
            scheduler = check_schedules_fit(self, scheduler)
            kwargs = dict(
                epoch_length=len(self.train_dataloader),
                max_epochs=self.max_epochs,
                max_iters=self.max_iters,
            )
        if not isinstance(self.optim_wrapper, OptimWrapperDict):
            return build_param_schedulers(scheduler, self.optim_wrapper, **kwargs)
        per_name = isinstance(scheduler, Mapping) and "type" not in scheduler
        out: dict[str, list] = {}
        for name, wrapper in self.optim_wrapper.items():
            cfg = scheduler.get(name) if per_name else scheduler
            if cfg is None:
                continue
            out[name] = build_param_schedulers(cfg, wrapper, **kwargs)
        return out

    # ------------------------------------------------------------------ data and loops
    @staticmethod
    def build_dataloader(
        dataloader: DataLoader | dict, seed: int | None = None, diff_rank_seed: bool = False
    ) -> DataLoader:
        """See :func:`fastopt.dataset.build_dataloader`."""
        return _build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def build_evaluator(self, evaluator: Any) -> Evaluator:
        """An ``Evaluator`` from an evaluator, a config, or a list of metrics or configs."""
        if isinstance(evaluator, Evaluator):
            return evaluator
        if isinstance(evaluator, BaseMetric):
            # as in MMEngine; say how to make it one
            raise TypeError(
                f"evaluator should be an Evaluator, a dict or a list, but got the metric "
                f"{type(evaluator).__name__}: pass [metric] or Evaluator([metric])"
            )
        if isinstance(evaluator, Mapping):
            if "metrics" in evaluator:
                cfg = dict(evaluator)
                cfg.setdefault("type", "Evaluator")
                return EVALUATOR.build(cfg)
            return Evaluator(dict(evaluator))
        if isinstance(evaluator, Sequence):
            return Evaluator(list(evaluator))
        if hasattr(evaluator, "process") and hasattr(evaluator, "evaluate"):
            return evaluator  # an evaluator of another library
        raise TypeError(
            "evaluator should be an Evaluator, a dict or a list, but got "
            f"{type(evaluator).__name__}"
        )

    def build_train_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """The training loop from ``train_cfg`` (``type`` or ``by_epoch``)."""
        if isinstance(loop, BaseLoop):
            return loop
        if not isinstance(loop, Mapping):
            raise TypeError(f"train_cfg should be a dict or a loop, but got {type(loop).__name__}")
        cfg = copy.deepcopy(dict(loop))
        if "type" in cfg and "by_epoch" in cfg:
            raise RuntimeError("Only one of `type` or `by_epoch` can exist in `loop_cfg`.")
        if "type" in cfg:
            return LOOPS.build(
                cfg, default_args=dict(runner=self, dataloader=self._train_dataloader)
            )
        if "by_epoch" not in cfg:
            raise KeyError(
                "train_cfg needs `type` (e.g. 'EpochBasedTrainLoop') or `by_epoch`, got "
                f"{sorted(cfg)}"
            )
        loop_cls = EpochBasedTrainLoop if cfg.pop("by_epoch") else IterBasedTrainLoop
        return loop_cls(**cfg, runner=self, dataloader=self._train_dataloader)

    def _build_eval_loop(
        self, loop: Any, default: type, dataloader: Any, evaluator: Any, key: str
    ) -> BaseLoop:
        if isinstance(loop, BaseLoop):
            return loop
        if not isinstance(loop, Mapping):
            raise TypeError(f"{key} should be a dict or a loop, but got {type(loop).__name__}")
        cfg = copy.deepcopy(dict(loop))
        defaults = dict(runner=self, dataloader=dataloader, evaluator=evaluator)
        if "type" in cfg:
            return LOOPS.build(cfg, default_args=defaults)
        return default(**cfg, **defaults)

    def build_val_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """The validation loop from ``val_cfg``."""
        return self._build_eval_loop(
            loop, ValLoop, self._val_dataloader, self._val_evaluator, "val_cfg"
        )

    def build_test_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """The test loop from ``test_cfg``."""
        return self._build_eval_loop(
            loop, TestLoop, self._test_dataloader, self._test_evaluator, "test_cfg"
        )

    # ------------------------------------------------------------------------- hooks
    def register_hook(self, hook: Hook | dict, priority: int | str | None = None) -> None:
        """Insert ``hook`` after every hook of lower or equal priority value.

        Priority: the ``priority`` argument, else the config's ``priority`` key, else the
        hook's own attribute.
        """
        if not isinstance(hook, (Hook, Mapping)):
            raise TypeError(f"hook should be an instance of Hook or dict, but got {hook}")
        cfg_priority = None
        if isinstance(hook, Mapping):
            cfg = hook.copy() if isinstance(hook, dict) else dict(hook)  # keeps a config's origin
            cfg_priority = cfg.pop("priority", None)
            hook_obj = HOOKS.build(cfg)
            if not isinstance(hook_obj, Hook):
                raise TypeError(f"{cfg.get('type')} built a {type(hook_obj).__name__}, not a Hook")
        else:
            hook_obj = hook
        if priority is not None:
            hook_obj.priority = priority
        elif cfg_priority is not None:
            hook_obj.priority = cfg_priority
        try:
            value = get_priority(hook_obj.priority)
        except (ValueError, TypeError) as e:
            raise type(e)(f"{type(hook_obj).__name__}: {e}") from None
        for i in range(len(self._hooks) - 1, -1, -1):
            if value >= get_priority(self._hooks[i].priority):
                self._hooks.insert(i + 1, hook_obj)
                return
        self._hooks.insert(0, hook_obj)

    def register_default_hooks(self, hooks: dict[str, Hook | dict | None] | None = None) -> None:
        """Register :data:`DEFAULT_HOOKS`, replaced (or removed with None) by ``hooks``."""
        merged: dict[str, Any] = {name: dict(cfg) for name, cfg in DEFAULT_HOOKS.items()}
        if hooks is not None:
            if not isinstance(hooks, Mapping):
                raise TypeError(f"default_hooks should be a dict, but got {type(hooks).__name__}")
            for name, hook in hooks.items():
                merged[name] = hook  # None removes (or disables a new name)
        for hook in merged.values():
            if hook is not None:
                self.register_hook(hook)

    def register_custom_hooks(self, hooks: list[Hook | dict]) -> None:
        """Register each of ``hooks`` (in order)."""
        if not isinstance(hooks, (list, tuple)):
            raise TypeError(f"custom_hooks should be a list, but got {type(hooks).__name__}")
        for hook in hooks:
            self.register_hook(hook)

    def register_hooks(
        self,
        default_hooks: dict[str, Hook | dict | None] | None = None,
        custom_hooks: list[Hook | dict] | None = None,
    ) -> None:
        """Register the default hooks, then the custom ones."""
        self.register_default_hooks(default_hooks)
        if custom_hooks is not None:
            self.register_custom_hooks(custom_hooks)

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """Call ``fn_name`` on every hook that has it, in priority order."""
        for hook in self._hooks:
            method = getattr(hook, fn_name, None)
            if method is None:
                continue
            try:
                method(self, **kwargs)
            except TypeError as e:
                raise TypeError(f"{e} in {hook}") from e

    def get_hooks_info(self) -> str:
        """The hook order per stage, in MMEngine's format."""
        stage_hooks: dict[str, list[str]] = {stage: [] for stage in Hook.stages}
        for hook in self._hooks:
            name = priority_name(hook.priority)
            line = f"({name:<12}) {type(hook).__name__:<35}"
            for stage in hook.get_triggered_stages():
                stage_hooks.setdefault(stage, []).append(line)
        blocks = []
        for stage in Hook.stages:
            lines = stage_hooks[stage]
            if lines:
                blocks.append(f"{stage}:\n" + "\n".join(lines) + "\n -------------------- ")
        return "\n".join(blocks)

    # ------------------------------------------------------------------------- phases
    def prepare_train(self) -> None:
        """Build the training loop, optimizer, schedulers and validation loop (once).

        Everything a config can get wrong is built here, before the run header is printed,
        so that a bad key ends the command with its error and little else.
        """
        if self._train_prepared:
            return
        self._train_loop = self.build_train_loop(self._train_loop)
        # the optimizer first: schedulers write into its groups; schedulers before any
        # checkpoint is loaded, so their constructor's step does not undo the resume (#1542)
        self.optim_wrapper = self.build_optim_wrapper(self.optim_wrapper)
        self.scale_lr(self.optim_wrapper, self.auto_scale_lr)
        if self.param_schedulers is not None:
            self.param_schedulers = self.build_param_scheduler(self.param_schedulers)
        if self._val_loop is not None:
            self._val_loop = self.build_val_loop(self._val_loop)
        self._train_prepared = True

    def run_header(self) -> str:
        """A few lines for the terminal: config, work dir, model, optimizer, schedule, device
        (the full environment and config are in the log file)."""
        from .header import run_header

        return run_header(self)

    @_logged_phase
    def train(self) -> nn.Module:
        """Train (building the loop, optimizer and schedulers, then loading/resuming)."""
        if self._train_loop is None:
            raise RuntimeError(
                "`self._train_loop` should not be None when calling train method. Please "
                "provide `train_dataloader`, `train_cfg`, `optimizer` and `param_scheduler` "
                "arguments when initializing runner."
            )
        self.prepare_train()
        self.logger.info(self.run_header())
        self.call_hook("before_run")
        self._init_model_weights()
        self.load_or_resume()
        self.optim_wrapper.initialize_count_status(
            self.model, self._train_loop.iter, self._train_loop.max_iters
        )
        model = self.train_loop.run()
        self.call_hook("after_run")
        return model

    @_logged_phase
    def val(self) -> dict:
        """Validate once (loading ``load_from`` first)."""
        if self._val_loop is None:
            raise RuntimeError(
                "`self._val_loop` should not be None when calling val method. Please provide "
                "`val_dataloader`, `val_cfg` and `val_evaluator` arguments when initializing runner."
            )
        self._val_loop = self.build_val_loop(self._val_loop)
        self.call_hook("before_run")
        self.load_or_resume()
        metrics = self.val_loop.run()
        self.call_hook("after_run")
        return metrics

    @_logged_phase
    def test(self) -> dict:
        """Test once (loading ``load_from`` first)."""
        if self._test_loop is None:
            raise RuntimeError(
                "`self._test_loop` should not be None when calling test method. Please provide "
                "`test_dataloader`, `test_cfg` and `test_evaluator` arguments when initializing "
                "runner."
            )
        self._test_loop = self.build_test_loop(self._test_loop)
        self.call_hook("before_run")
        self.load_or_resume()
        metrics = self.test_loop.run()
        self.call_hook("after_run")
        return metrics

    # -------------------------------------------------------------------- checkpoints
    def load_or_resume(self) -> None:
        """Resume (``resume``) or load weights (``load_from``), once."""
        if self._has_loaded:
            return
        resume_from = None
        if self._resume_from is not None:
            resume_from = self._resume_from
        elif self._resume and self._load_from is None:
            record = read_last_checkpoint(self._work_dir)
            if record is None:
                self.logger.info(f"No checkpoint found in {self._work_dir}: training from scratch.")
            else:
                resume_from = record.path
                # against the checksum last_checkpoint recorded, too (cached: loading does
                # not hash the file again)
                verify_checkpoint(resume_from, record.sha256)
                self.logger.info(f"Auto resumed from the latest checkpoint {resume_from}.")
        elif self._resume:
            resume_from = self._load_from
        if resume_from is not None:
            self.resume(resume_from)
        elif self._load_from is not None:
            self.load_checkpoint(self._load_from)

    def load_checkpoint(
        self,
        filename: str,
        map_location: Any = "cpu",
        strict: bool = False,
        revise_keys: Sequence[tuple[str, str]] = ((r"^module\.", ""),),
    ) -> dict:
        """Load the weights of ``filename`` into the model (``after_load_checkpoint`` first)."""
        checkpoint = load_checkpoint_file(filename, map_location=map_location)
        self.call_hook("after_load_checkpoint", checkpoint=checkpoint)
        shards = _sharded_state_of(filename, checkpoint)
        if shards is not None:  # FSDP2's sharded state: every rank reads its shards
            result = load_sharded_model_state(shards, unwrap_model(self.model), strict)
            missing = [*result.missing_keys, *result.unexpected_keys]
            if missing:
                self.logger.warning(f"{shards}: missing or unexpected keys {missing}")
            self._has_loaded = True
            self.logger.info(f"Load checkpoint from {filename} (sharded state {shards})")
            return checkpoint
        state_dict = checkpoint.get("state_dict", checkpoint)
        if not isinstance(state_dict, Mapping):
            raise RuntimeError(f"checkpoint {filename!r} has no state_dict")
        load_model_state(
            unwrap_model(self.model),
            revise_state_dict(state_dict, revise_keys),
            strict,
            self.logger,
        )
        self._has_loaded = True
        self.logger.info(f"Load checkpoint from {filename}")
        return checkpoint

    def resume(
        self,
        filename: str,
        resume_optimizer: bool = True,
        resume_param_scheduler: bool = True,
        map_location: Any = "default",
    ) -> None:
        """Continue the run saved in ``filename`` exactly where it stopped.

        Restores the model, counters, message hub, optimizer (and loss scaler), schedulers,
        the train sampler's state and, last, every RNG state.
        """
        if map_location == "default":
            map_location = next((t.device for t in self.model.parameters()), torch.device("cpu"))
        checkpoint = self.load_checkpoint(filename, map_location=map_location)
        meta = checkpoint.get("meta", {})
        if self.train_loop_configured:
            self.train_loop._epoch = int(meta["epoch"])
            self.train_loop._iter = int(meta["iter"])

        resumed_seed = meta.get("seed")
        current_seed = self._randomness_cfg.get("seed")
        if resumed_seed is not None and resumed_seed != current_seed:
            if current_seed is not None:
                self.logger.warning(
                    f'The value of random seed in the checkpoint "{resumed_seed}" is different '
                    f'from the value in `randomness` config "{current_seed}"'
                )
            self._randomness_cfg.update(seed=resumed_seed)
            self.set_randomness(**self._randomness_cfg)

        if self.train_loop_configured:
            dataset_meta = getattr(self.train_dataloader.dataset, "metainfo", None)
            if "dataset_meta" in meta and to_weights_only(dataset_meta) != meta["dataset_meta"]:
                self.logger.warning(
                    "The dataset metainfo from the resumed checkpoint is different from the "
                    "current training dataset, please check the correctness of the checkpoint "
                    "or the training dataset."
                )
        if "message_hub" in checkpoint:
            self.message_hub.load_state_dict(checkpoint["message_hub"])

        if "optimizer" in checkpoint and resume_optimizer and self.optim_wrapper is not None:
            self.optim_wrapper = self.build_optim_wrapper(self.optim_wrapper)
            state = checkpoint["optimizer"]
            shards = _sharded_state_of(filename, checkpoint)
            optimizer = self.optim_wrapper.optimizer
            # saved by an FSDP2 run, at any world size: read in this run's layout, then loaded
            # again with the wrapper's own state (a loss scaler)
            if shards is not None:
                load_sharded_optimizer_state(shards, unwrap_model(self.model), optimizer)
                state = {**state, **optimizer.state_dict()}
            elif meta.get(OPTIMIZER_STATE_BY_NAME):
                load_full_optimizer_state_dict(unwrap_model(self.model), optimizer, state)
                state = {**state, **optimizer.state_dict()}
            self.optim_wrapper.load_state_dict(state)

        if resume_param_scheduler and self.param_schedulers is None:
            self.logger.warning(
                "`resume_param_scheduler` is True but `self.param_schedulers` is None, so skip "
                "resuming parameter schedulers"
            )
            resume_param_scheduler = False
        if "param_schedulers" in checkpoint and resume_param_scheduler:
            self.param_schedulers = self.build_param_scheduler(self.param_schedulers)
            self._load_scheduler_states(checkpoint["param_schedulers"])

        if self.train_loop_configured and "train_dataloader" in checkpoint:
            sampler = loader_sampler(self.train_dataloader)
            state = checkpoint["train_dataloader"].get("sampler")
            if state is not None and hasattr(sampler, "load_state_dict"):
                sampler.load_state_dict(state)

        rng = checkpoint.get("rng_state")
        if rng:
            if len(rng) != self._world_size:
                self.logger.warning(
                    f"the checkpoint holds RNG states of {len(rng)} processes but {self._world_size} "
                    "run now: every process continues from rank 0's state"
                )
            set_rng_state(rng[self._rank] if len(rng) == self._world_size else rng[0])
        self._has_loaded = True
        self.logger.info(f"resumed epoch: {self.epoch}, iter: {self.iter}")

    def _load_scheduler_states(self, states: Any) -> None:
        schedulers = self.param_schedulers
        if isinstance(schedulers, dict):
            for name, group in schedulers.items():
                saved = states.get(name, []) if isinstance(states, Mapping) else []
                self._load_scheduler_list(group, saved, name)
        else:
            self._load_scheduler_list(schedulers, states, None)

    def _load_scheduler_list(self, schedulers: list, states: list, name: str | None) -> None:
        where = f" of optimizer {name!r}" if name else ""
        if len(states) != len(schedulers):
            self.logger.warning(
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

    def save_checkpoint(
        self,
        out_dir: str,
        filename: str,
        file_client_args: dict | None = None,
        save_optimizer: bool = True,
        save_param_scheduler: bool = True,
        meta: dict | None = None,
        by_epoch: bool = True,
        backend_args: dict | None = None,
    ) -> str | None:
        """Write a checkpoint of the whole training state to ``out_dir/filename``.

        Call it on every rank: the RNG states of all ranks are gathered; rank 0 writes and gets
        the SHA-256 of the file's payload back (the other ranks None).
        """
        if meta is None:
            meta = {}
        elif not isinstance(meta, dict):
            raise TypeError(f"meta should be a dict or None, but got {type(meta)}")
        meta = dict(meta)
        if by_epoch:
            # called from after_train_epoch, before the loop increments the epoch
            meta.setdefault("epoch", self.epoch + 1)
            meta.setdefault("iter", self.iter)
        else:
            meta.setdefault("epoch", self.epoch)
            meta.setdefault("iter", self.iter + 1)
        meta.update(
            cfg=self.cfg_text,
            seed=self.seed,
            experiment_name=self.experiment_name,
            time=time.strftime("%Y%m%d_%H%M%S", time.localtime()),
            fastopt_version=fastopt.__version__,
        )
        if self.train_loop_configured:
            metainfo = getattr(self.train_dataloader.dataset, "metainfo", None)
            if metainfo is not None:
                meta["dataset_meta"] = metainfo

        model = unwrap_model(self.model)
        # FSDP2: full state dicts gathered to rank 0, or every rank's shards in a directory
        sharded = is_fully_sharded(model)
        if save_optimizer and not isinstance(self.optim_wrapper, OptimWrapper):
            raise TypeError(
                "self.optim_wrapper should be an `OptimWrapper` or `OptimWrapperDict` "
                f"instance, but got {self.optim_wrapper}"
            )
        if sharded and save_optimizer and isinstance(self.optim_wrapper, OptimWrapperDict):
            raise NotImplementedError(
                "checkpoints of an FSDP2 model with several optimizers (OptimWrapperDict)"
            )
        checkpoint: dict[str, Any] = {"meta": meta}
        if saves_sharded_state(model):
            shards = sharded_state_dir(filename)
            optimizer = self.optim_wrapper.optimizer if save_optimizer else None
            save_sharded_state(os.path.join(out_dir, shards), model, optimizer)
            meta[SHARDED_STATE] = shards
        else:
            checkpoint["state_dict"] = (
                full_model_state_dict(model) if sharded else weights_to_cpu(model.state_dict())
            )
        checkpoint["message_hub"] = self.message_hub.state_dict()
        if save_optimizer:
            state = self.optim_wrapper.state_dict()
            if SHARDED_STATE in meta:
                state.pop("state", None)  # in the sharded state directory
            elif sharded:
                # by parameter name, unsharded: it loads at any world size, with or without FSDP2
                state.update(full_optimizer_state_dict(model, self.optim_wrapper.optimizer))
                meta[OPTIMIZER_STATE_BY_NAME] = True
            checkpoint["optimizer"] = _to_cpu(state)
        if save_param_scheduler and self.param_schedulers is None:
            if not self._warned_no_schedulers:
                self._warned_no_schedulers = True
                self.logger.warning(
                    "`save_param_scheduler` is True but `self.param_schedulers` is None, so skip "
                    "saving parameter schedulers"
                )
            save_param_scheduler = False
        if save_param_scheduler:
            checkpoint["param_schedulers"] = self._scheduler_states()
        if self.train_loop_built:
            sampler = loader_sampler(self.train_dataloader)
            if hasattr(sampler, "state_dict"):
                checkpoint["train_dataloader"] = {"sampler": sampler.state_dict()}
        checkpoint["rng_state"] = dist.all_gather_object(get_rng_state())
        self.call_hook("before_save_checkpoint", checkpoint=checkpoint)
        if dist.is_main_process():
            return save_checkpoint(checkpoint, os.path.join(out_dir, filename))
        return None

    def _scheduler_states(self) -> list | dict:
        def states(schedulers: list) -> list:
            out = []
            for scheduler in schedulers:
                state = dict(scheduler.state_dict())
                state["_type"] = type(scheduler).__name__
                out.append(state)
            return out

        if isinstance(self.param_schedulers, dict):
            return {name: states(group) for name, group in self.param_schedulers.items()}
        return states(self.param_schedulers)

    def write_last_checkpoint(self, path: str, sha256: str | None = None) -> None:
        """Record ``path`` (and its checksum) in ``work_dir/last_checkpoint``, atomically, for
        auto-resume."""
        target = os.path.join(self._work_dir, LAST_CHECKPOINT_FILE)
        text = format_last_checkpoint(path, sha256)
        atomic_write(target, lambda f: f.write(text), mode="w", encoding="utf-8")

    def dump_config(self) -> None:
        """Write the config into the work dir (named after the config file, or the timestamp)."""
        if not self.cfg or not dist.is_main_process():
            return
        name = os.path.basename(self.cfg.filename) if self.cfg.filename else f"{self._timestamp}.py"
        path = os.path.join(self._work_dir, name)
        try:
            # written atomically: a kill while it is written keeps the previous dump
            text = self.cfg.dump()
            atomic_write(path, lambda f: f.write(text), mode="w", encoding="utf-8")
        except Exception as e:  # objects in the config that cannot be written as source
            self.logger.warning(f"could not dump the config to {path}: {e}")

    # --------------------------------------------------------------------------- logs
    def flush_logs(self) -> None:
        """Flush the log handlers (the log file is complete on disk afterwards)."""
        for handler in self.logger.handlers:
            handler.flush()

    def close_log_file(self) -> None:
        """Close the log file (the terminal keeps logging)."""
        close_run_logger(self.logger)

    def close(self) -> None:
        """Release the log file and the vis backends' files."""
        self.visualizer.close()
        self.close_log_file()

    def __repr__(self) -> str:
        return f"Runner(experiment_name={self._experiment_name!r}, work_dir={self._work_dir!r})"
