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

The runner is the outline of a run; what it is made of lives next to it: :mod:`.builders`
(each ``build_*``), :mod:`.environment` (process group, names, log dir), :mod:`.hook_list`
(priority order, calls, printout) and :mod:`.checkpointing` (what a checkpoint holds, saved
and restored).
"""

from __future__ import annotations

import copy
import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from fastopt import dist
from fastopt.config import Config, translate_legacy_config
from fastopt.config.known_keys import RUNNER_ARGUMENTS
from fastopt.dataset import build_dataloader as _build_dataloader
from fastopt.evaluator import Evaluator
from fastopt.fileio.atomic import atomic_write
from fastopt.fileio.checkpoint import (
    load_checkpoint_file,
    load_model_state,
    revise_state_dict,
    save_checkpoint,
)
from fastopt.hooks import Hook
from fastopt.logging import MessageHub
from fastopt.logging.run_logger import (
    FILE_ONLY,
    activate,
    build_run_logger,
    close_run_logger,
    deactivate,
)
from fastopt.loops import BaseLoop, TestLoop, ValLoop
from fastopt.model import unwrap_model
from fastopt.model.fsdp import load_sharded_model_state
from fastopt.ops.dtensor import is_dtensor
from fastopt.registry import RUNNERS, DefaultScope
from fastopt.scheduler import _ParamScheduler
from fastopt.visualization import Visualizer
from fastopt.wrapper import OptimWrapper

from . import builders, checkpointing, environment, header
from .hook_list import DEFAULT_HOOKS, HookList
from .log_processor import LogProcessor
from .randomness import set_random_seed
from .run_length import check_schedules_fit

ConfigType = Mapping[str, Any]

# when Runner(config_dump=...) writes the config into the work dir
CONFIG_DUMPS = ("on_init", "after_load", "never")

__all__ = ["CONFIG_DUMPS", "DEFAULT_HOOKS", "Runner"]


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
        config_dump: when the config is written into the work dir: ``'on_init'`` (at the end
            of construction, as MMEngine), ``'after_load'`` (each time a phase has loaded its
            checkpoint: a run that fails on bad input leaves an earlier dump alone) or
            ``'never'``. Not a config key: ``from_cfg`` takes it as an argument.
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
        config_dump: str = "on_init",
    ) -> None:
        # the config and the work dir
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
        if config_dump not in CONFIG_DUMPS:
            raise ValueError(
                f"config_dump should be one of {CONFIG_DUMPS}, but got {config_dump!r}"
            )
        self._config_dump = config_dump

        # the phases, as configs: each is built when it first runs
        builders.check_group(
            train_dataloader=train_dataloader, train_cfg=train_cfg, optim_wrapper=optim_wrapper
        )
        self._train_dataloader = train_dataloader
        self._train_loop: Any = train_cfg
        self.optim_wrapper: Any = optim_wrapper
        self.auto_scale_lr = auto_scale_lr
        if param_scheduler is not None and optim_wrapper is None:
            raise ValueError(
                f"param_scheduler should be None when optim_wrapper is None, but got {param_scheduler}"
            )
        builders.check_scheduler_cfg(param_scheduler)
        self.param_schedulers: Any = param_scheduler
        builders.check_group(
            val_dataloader=val_dataloader, val_cfg=val_cfg, val_evaluator=val_evaluator
        )
        self._val_dataloader = val_dataloader
        self._val_loop: Any = val_cfg
        self._val_evaluator = val_evaluator
        builders.check_group(
            test_dataloader=test_dataloader, test_cfg=test_cfg, test_evaluator=test_evaluator
        )
        self._test_dataloader = test_dataloader
        self._test_loop: Any = test_cfg
        self._test_evaluator = test_evaluator

        # the environment: process group, seeds, names, logs
        environment.check_launcher(launcher)
        self._launcher = launcher
        self._distributed = launcher != "none"
        env_cfg = dict(dist_cfg=dict(backend="nccl")) if env_cfg is None else dict(env_cfg)
        self.setup_env(env_cfg)
        self._randomness_cfg = dict(randomness) if randomness is not None else dict(seed=None)
        self.set_randomness(**self._randomness_cfg)
        self._experiment_name = environment.unique_experiment_name(
            experiment_name, self.cfg.filename, self._timestamp
        )
        self._log_dir = environment.make_log_dir(self._work_dir, self._timestamp)
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

        # what to load before the first phase
        self._load_from = load_from
        if not isinstance(resume, (bool, str, os.PathLike)):
            raise TypeError(f"resume should be a bool or a checkpoint path, but got {resume!r}")
        self._resume = bool(resume)
        self._resume_from = os.fspath(resume) if isinstance(resume, (str, os.PathLike)) else None
        self._has_loaded = False
        self._warned_no_schedulers = False
        self._train_prepared = False

        # the model, then the hooks
        if isinstance(model, dict) and data_preprocessor is not None:
            model = dict(model)
            model.setdefault("data_preprocessor", data_preprocessor)
        self.model = self.build_model(model)
        self.model = self.wrap_model(self.cfg.get("model_wrapper_cfg"), self.model)
        self._model_name = type(unwrap_model(self.model)).__name__
        self._hook_list = HookList()
        self.register_hooks(default_hooks, custom_hooks)
        self.logger.info(
            f"Hooks will be executed in the following order:\n{self.get_hooks_info()}",
            extra=FILE_ONLY,
        )
        if self._config_dump == "on_init":
            self.dump_config()

    @classmethod
    def from_cfg(cls, cfg: ConfigType, config_dump: str = "on_init") -> Runner:
        """Build a runner from a full config (MMEngine's keys; MMCV 1.x keys are translated).

        Each key of :data:`fastopt.config.known_keys.RUNNER_ARGUMENTS` the config has is
        passed as the constructor argument of that name (absent ones keep their defaults).
        """
        if not isinstance(cfg, Mapping):
            raise TypeError(f"cfg should be a Config or a dict, but got {type(cfg).__name__}")
        config = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(dict(cfg))
        translated = translate_legacy_config(config.to_dict(), config.filename)
        if translated != config.to_dict():
            config = Config(translated, cfg_text=config.text, filename=config.filename)
        for key in ("model", "work_dir"):
            if key not in config:
                raise KeyError(f"the config has no `{key}`; a runner needs model and work_dir")
        arguments = {key: config[key] for key in RUNNER_ARGUMENTS if key in config}
        return cls(**arguments, cfg=config, config_dump=config_dump)

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
        return self._hook_list.hooks

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

    @property
    def cfg_text(self) -> str:
        """The config as Python source (its repr when it holds objects that have none)."""
        return environment.config_text(self.cfg)

    # ------------------------------------------------------------------------ phases
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
        return header.run_header(self)

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
            self.model, self.train_loop.iter, self.train_loop.max_iters
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

    # ------------------------------------------------------------------- environment
    def setup_env(self, env_cfg: dict) -> None:
        """cuDNN benchmark, multiprocessing start method, process group, timestamp."""
        self._rank, self._world_size, self._timestamp = environment.setup_env(
            env_cfg, self._launcher
        )

    def set_randomness(
        self, seed: int | None = None, diff_rank_seed: bool = False, deterministic: bool = False
    ) -> None:
        """Seed every generator (see :func:`fastopt.runner.randomness.set_random_seed`)."""
        self._deterministic = deterministic
        self._seed = set_random_seed(seed, deterministic, diff_rank_seed)

    def _log_env(self, env_cfg: dict) -> None:
        report = environment.environment_report(
            env_cfg, self._seed, self._deterministic, self._launcher, self._world_size
        )
        self.logger.info(report, extra=FILE_ONLY)
        if self.cfg:
            self.logger.info(f"Config:\n{self.cfg_text}", extra=FILE_ONLY)

    # ------------------------------------------------------------------------ builders
    # MMEngine's Runner.build_* methods: the functions of .builders with this run's state
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
        return builders.build_message_hub(message_hub, self._experiment_name)

    def build_log_processor(self, log_processor: LogProcessor | dict) -> LogProcessor:
        """A ``LogProcessor`` from its arguments (``type`` optional)."""
        return builders.build_log_processor(log_processor)

    def build_visualizer(self, visualizer: Visualizer | dict | None = None) -> Visualizer:
        """The run's visualizer (default: JSON scalars in ``<log_dir>/vis_data``)."""
        return builders.build_visualizer(visualizer, self._experiment_name, self._log_dir)

    def build_model(self, model: nn.Module | dict) -> nn.Module:
        """``model`` itself, or the module its config describes."""
        return builders.build_model(model)

    def wrap_model(self, model_wrapper_cfg: dict | None, model: nn.Module) -> nn.Module:
        """Move the model to the device; in distributed training, wrap it in DDP."""
        return builders.wrap_model(
            model, model_wrapper_cfg, self._distributed, self.cfg, self.logger
        )

    def _init_model_weights(self) -> None:
        model = unwrap_model(self.model)
        if hasattr(model, "init_weights"):
            model.init_weights()
            for tensor in model.state_dict().values():
                if not is_dtensor(tensor):  # FSDP2 shards: each rank owns its own
                    dist.broadcast(tensor)

    def build_optim_wrapper(self, optim_wrapper: OptimWrapper | dict) -> OptimWrapper:
        """``optim_wrapper`` itself, or the wrapper (or ``OptimWrapperDict``) its config gives."""
        return builders.build_optim_wrapper(optim_wrapper, self.model, self.message_hub)

    def scale_lr(self, optim_wrapper: OptimWrapper, auto_scale_lr: dict | None = None) -> None:
        """Linear scaling rule: every lr times ``world_size * batch_size / base_batch_size``."""
        builders.scale_lr(
            optim_wrapper,
            auto_scale_lr,
            self.param_schedulers,
            lambda: self.train_dataloader,
            self._world_size,
            self.logger,
        )

    def build_param_scheduler(self, scheduler: Any) -> list | dict:
        """Build the schedulers of every optimizer; ``end`` defaults to the training length."""
        if not isinstance(self.optim_wrapper, OptimWrapper):
            raise RuntimeError("build the optim_wrapper before the parameter schedulers")
        lengths: dict[str, Any] = {}
        if self.train_loop_built:
            scheduler = check_schedules_fit(self, scheduler)
            lengths = dict(
                epoch_length=len(self.train_dataloader),
                max_epochs=self.max_epochs,
                max_iters=self.max_iters,
            )
        return builders.build_param_scheduler(scheduler, self.optim_wrapper, **lengths)

    @staticmethod
    def build_dataloader(
        dataloader: DataLoader | dict, seed: int | None = None, diff_rank_seed: bool = False
    ) -> DataLoader:
        """See :func:`fastopt.dataset.build_dataloader`."""
        return _build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def build_evaluator(self, evaluator: Any) -> Evaluator:
        """An ``Evaluator`` from an evaluator, a config, or a list of metrics or configs."""
        return builders.build_evaluator(evaluator)

    def build_train_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """The training loop from ``train_cfg`` (``type`` or ``by_epoch``)."""
        return builders.build_train_loop(loop, self, self._train_dataloader)

    def build_val_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """The validation loop from ``val_cfg``."""
        return builders.build_eval_loop(
            loop, ValLoop, self, self._val_dataloader, self._val_evaluator, "val_cfg"
        )

    def build_test_loop(self, loop: BaseLoop | dict) -> BaseLoop:
        """The test loop from ``test_cfg``."""
        return builders.build_eval_loop(
            loop, TestLoop, self, self._test_dataloader, self._test_evaluator, "test_cfg"
        )

    # --------------------------------------------------------------------------- hooks
    def register_hook(self, hook: Hook | dict, priority: int | str | None = None) -> None:
        """Insert ``hook`` after every hook of lower or equal priority value.

        Priority: the ``priority`` argument, else the config's ``priority`` key, else the
        hook's own attribute.
        """
        self._hook_list.register(hook, priority)

    def register_default_hooks(self, hooks: dict[str, Hook | dict | None] | None = None) -> None:
        """Register :data:`DEFAULT_HOOKS`, replaced (or removed with None) by ``hooks``."""
        self._hook_list.register_defaults(hooks)

    def register_custom_hooks(self, hooks: list[Hook | dict]) -> None:
        """Register each of ``hooks`` (in order)."""
        self._hook_list.register_custom(hooks)

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
        self._hook_list.call(self, fn_name, **kwargs)

    def get_hooks_info(self) -> str:
        """The hook order per stage, in MMEngine's format."""
        return self._hook_list.info()

    # --------------------------------------------------------------------- checkpoints
    def load_or_resume(self) -> None:
        """Resume (``resume``) or load weights (``load_from``), once; then dump the config
        if ``config_dump='after_load'``."""
        if not self._has_loaded:
            source = checkpointing.resume_source(
                self, self._load_from, self._resume, self._resume_from
            )
            if source is not None:
                self.resume(source)
            elif self._load_from is not None:
                self.load_checkpoint(self._load_from)
        if self._config_dump == "after_load":
            self.dump_config()

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
        shards = checkpointing.sharded_state_of(filename, checkpoint)
        if shards is not None:  # FSDP2's sharded state: every rank reads its shards
            result = load_sharded_model_state(shards, unwrap_model(self.model), strict)
            mismatched = [*result.missing_keys, *result.unexpected_keys]
            if mismatched:
                self.logger.warning(f"{shards}: missing or unexpected keys {mismatched}")
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
        """Continue the run saved in ``filename`` exactly where it stopped (see
        :func:`fastopt.runner.checkpointing.restore_checkpoint`)."""
        if map_location == "default":
            map_location = next((t.device for t in self.model.parameters()), torch.device("cpu"))
        checkpoint = self.load_checkpoint(filename, map_location=map_location)
        checkpointing.restore_checkpoint(
            self, filename, checkpoint, resume_optimizer, resume_param_scheduler
        )
        self._has_loaded = True
        self.logger.info(f"resumed epoch: {self.epoch}, iter: {self.iter}")

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
        meta = checkpointing.checkpoint_meta(self, meta, by_epoch)
        if save_param_scheduler and self.param_schedulers is None:
            if not self._warned_no_schedulers:
                self._warned_no_schedulers = True
                self.logger.warning(
                    "`save_param_scheduler` is True but `self.param_schedulers` is None, so skip "
                    "saving parameter schedulers"
                )
            save_param_scheduler = False
        checkpoint = checkpointing.collect_checkpoint(
            self, meta, save_optimizer, save_param_scheduler, os.path.join(out_dir, filename)
        )
        self.call_hook("before_save_checkpoint", checkpoint=checkpoint)
        if dist.is_main_process():
            return save_checkpoint(checkpoint, os.path.join(out_dir, filename))
        return None

    def write_last_checkpoint(self, path: str, sha256: str | None = None) -> None:
        """Record ``path`` (and its checksum) in ``work_dir/last_checkpoint``, atomically, for
        auto-resume."""
        checkpointing.write_last_checkpoint(self._work_dir, path, sha256)

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

    # ---------------------------------------------------------------------------- logs
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
