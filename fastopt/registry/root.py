"""fastopt's root registries (the same set and names as MMEngine's ``mmengine.registry``).

Each registry lists the fastopt modules whose classes register into it; they are imported
on the first lookup, so ``OPTIMIZERS.get('FusedAdamW')`` works without importing
``fastopt.optim`` first. A downstream package makes children, e.g.
``MODELS = Registry('model', parent=fastopt.registry.MODELS, locations=['mypkg.models'])``.
"""

from __future__ import annotations

from .build_functions import (
    build_model_from_cfg,
    build_optimizer_from_cfg,
    build_runner_from_cfg,
    build_scheduler_from_cfg,
)
from .registry import Registry

_RUNTIME = ["fastopt.runner"]

RUNNERS = Registry("runner", build_func=build_runner_from_cfg, scope="fastopt", locations=_RUNTIME)
RUNNER_CONSTRUCTORS = Registry("runner constructor", scope="fastopt", locations=_RUNTIME)
LOOPS = Registry("loop", scope="fastopt", locations=["fastopt.loops"])
HOOKS = Registry("hook", scope="fastopt", locations=["fastopt.hooks"])
STRATEGIES = Registry("strategy", scope="fastopt")
DATASETS = Registry("dataset", scope="fastopt", locations=["fastopt.dataset"])
DATA_SAMPLERS = Registry("data sampler", scope="fastopt", locations=["fastopt.dataset"])
TRANSFORMS = Registry("transform", scope="fastopt")
MODELS = Registry(
    "model", build_func=build_model_from_cfg, scope="fastopt", locations=["fastopt.model"]
)
MODEL_WRAPPERS = Registry("model_wrapper", scope="fastopt", locations=["fastopt.model"])
WEIGHT_INITIALIZERS = Registry("weight initializer", scope="fastopt")
# fastopt.optim registers the fused optimizers; torch_optimizers adds every torch.optim class
# and the LARS alias.
OPTIMIZERS = Registry(
    "optimizer",
    build_func=build_optimizer_from_cfg,
    scope="fastopt",
    locations=["fastopt.optim", "fastopt.registry.torch_optimizers"],
)
OPTIM_WRAPPERS = Registry("optim_wrapper", scope="fastopt", locations=["fastopt.wrapper"])
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    "optimizer wrapper constructor", scope="fastopt", locations=["fastopt.constructor"]
)
PARAM_SCHEDULERS = Registry(
    "parameter scheduler",
    build_func=build_scheduler_from_cfg,
    scope="fastopt",
    locations=["fastopt.scheduler"],
)
METRICS = Registry("metric", scope="fastopt", locations=["fastopt.evaluator"])
EVALUATOR = Registry("evaluator", scope="fastopt", locations=["fastopt.evaluator"])
TASK_UTILS = Registry("task util", scope="fastopt")
VISUALIZERS = Registry("visualizer", scope="fastopt", locations=["fastopt.visualization"])
VISBACKENDS = Registry("vis_backend", scope="fastopt", locations=["fastopt.visualization"])
LOG_PROCESSORS = Registry("log_processor", scope="fastopt", locations=_RUNTIME)
INFERENCERS = Registry("inferencer", scope="fastopt")
FUNCTIONS = Registry("function", scope="fastopt", locations=["fastopt.dataset"])

ROOT_REGISTRIES: dict[str, Registry] = {
    name: value for name, value in globals().items() if isinstance(value, Registry)
}
