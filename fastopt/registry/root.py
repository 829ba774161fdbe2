"""fastopt's root registries (the same set and names as MMEngine's ``mmengine.registry``).

Each registry lists the fastopt modules whose classes register into it; they are imported
on the first lookup, so ``OPTIMIZERS.get('FusedAdamW')`` works without importing
``fastopt.optim`` first. ``member_types`` says which classes belong in a registry: a dotted
``type`` path may name only their subclasses (or a registered object), see
:mod:`fastopt.registry.type_policy`; registries without member types (transforms, functions,
...) accept dotted paths only to registered objects. A downstream package makes children, e.g.
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

RUNNERS = Registry(
    "runner",
    build_func=build_runner_from_cfg,
    scope="fastopt",
    locations=_RUNTIME,
    member_types=["fastopt.runner.Runner"],
)
RUNNER_CONSTRUCTORS = Registry("runner constructor", scope="fastopt", locations=_RUNTIME)
LOOPS = Registry(
    "loop", scope="fastopt", locations=["fastopt.loops"], member_types=["fastopt.loops.BaseLoop"]
)
HOOKS = Registry(
    "hook", scope="fastopt", locations=["fastopt.hooks"], member_types=["fastopt.hooks.Hook"]
)
STRATEGIES = Registry("strategy", scope="fastopt")
DATASETS = Registry(
    "dataset",
    scope="fastopt",
    locations=["fastopt.dataset"],
    member_types=["torch.utils.data.Dataset"],
)
DATA_SAMPLERS = Registry(
    "data sampler",
    scope="fastopt",
    locations=["fastopt.dataset"],
    member_types=["torch.utils.data.Sampler"],
)
TRANSFORMS = Registry("transform", scope="fastopt")
MODELS = Registry(
    "model",
    build_func=build_model_from_cfg,
    scope="fastopt",
    locations=["fastopt.model"],
    member_types=["torch.nn.Module"],
)
MODEL_WRAPPERS = Registry(
    "model_wrapper", scope="fastopt", locations=["fastopt.model"], member_types=["torch.nn.Module"]
)
WEIGHT_INITIALIZERS = Registry("weight initializer", scope="fastopt")
# fastopt.optim registers the fused optimizers; torch_optimizers adds every torch.optim class
# and the LARS alias.
OPTIMIZERS = Registry(
    "optimizer",
    build_func=build_optimizer_from_cfg,
    scope="fastopt",
    locations=["fastopt.optim", "fastopt.registry.torch_optimizers"],
    member_types=["torch.optim.Optimizer"],
)
OPTIM_WRAPPERS = Registry(
    "optim_wrapper",
    scope="fastopt",
    locations=["fastopt.wrapper"],
    member_types=["fastopt.wrapper.OptimWrapper"],
)
OPTIM_WRAPPER_CONSTRUCTORS = Registry(
    "optimizer wrapper constructor",
    scope="fastopt",
    locations=["fastopt.constructor"],
    member_types=["fastopt.constructor.DefaultOptimWrapperConstructor"],
)
PARAM_SCHEDULERS = Registry(
    "parameter scheduler",
    build_func=build_scheduler_from_cfg,
    scope="fastopt",
    locations=["fastopt.scheduler"],
    member_types=["fastopt.scheduler._ParamScheduler"],
)
METRICS = Registry(
    "metric",
    scope="fastopt",
    locations=["fastopt.evaluator"],
    member_types=["fastopt.evaluator.BaseMetric"],
)
EVALUATOR = Registry(
    "evaluator",
    scope="fastopt",
    locations=["fastopt.evaluator"],
    member_types=["fastopt.evaluator.Evaluator"],
)
TASK_UTILS = Registry("task util", scope="fastopt")
VISUALIZERS = Registry(
    "visualizer",
    scope="fastopt",
    locations=["fastopt.visualization"],
    member_types=["fastopt.visualization.Visualizer"],
)
VISBACKENDS = Registry(
    "vis_backend",
    scope="fastopt",
    locations=["fastopt.visualization"],
    member_types=["fastopt.visualization.BaseVisBackend"],
)
LOG_PROCESSORS = Registry(
    "log_processor",
    scope="fastopt",
    locations=_RUNTIME,
    member_types=["fastopt.runner.LogProcessor"],
)
INFERENCERS = Registry("inferencer", scope="fastopt")
FUNCTIONS = Registry("function", scope="fastopt", locations=["fastopt.dataset"])

ROOT_REGISTRIES: dict[str, Registry] = {
    name: value for name, value in globals().items() if isinstance(value, Registry)
}
