"""The optimizer catalog: for each fused optimizer, the one place naming its class, the engine op
it runs, the registry names configs use for it, the implementation it follows (what tests
compare it with), its benchmark peers and arguments, and its test cases.

The registry (aliases), the MMEngine integration, ``fastopt bench`` and the tests read this list;
``tests/test_catalog.py`` fails when an optimizer is missing from any of them or when this list
and the engine's op list (``fastopt.ops.catalog``) disagree.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

#: the benchmark's peer columns: a per-param loop, a multi-tensor (foreach) and a fused one
PEER_IMPLS: tuple[str, ...] = ("for-loop", "foreach", "fused")


@dataclass(frozen=True)
class Target:
    """A class named ``module:attr`` and the keyword arguments it is built with."""

    path: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def load(self) -> Any:
        module, attr = self.path.split(":")
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        return obj

    def build(self, params: Any, **kwargs: Any) -> Any:
        return self.load()(params, **kwargs, **self.kwargs)


def _torch(name: str) -> dict[str, Target]:
    """torch.optim's three implementations of an optimizer."""
    path = f"torch.optim:{name}"
    return {
        "for-loop": Target(path, dict(foreach=False)),
        "foreach": Target(path, dict(foreach=True)),
        "fused": Target(path, dict(fused=True)),
    }


@dataclass(frozen=True)
class Optimizer:
    """One fused optimizer of the catalog."""

    name: str  # its class in fastopt.optim
    op: str  # the engine op it runs (fastopt.ops.catalog)
    label: str  # in benchmark tables
    reference: Target  # the implementation it follows: tests compare with it
    #: other registry names: the ones OpenMMLab / timm configs use
    aliases: tuple[str, ...] = ()
    #: benchmark peers by PEER_IMPLS column (absent: the column stays empty)
    peers: dict[str, Target] = field(default_factory=dict)
    bench_kwargs: dict[str, Any] = field(default_factory=dict)
    #: group keys set on the no-decay groups of paramwise benchmark sets
    paramwise_extra: dict[str, Any] = field(default_factory=dict)
    #: bytes per element a step moves, in units of (param, grad, state) element sizes
    traffic: tuple[int, int, int] = (2, 1, 0)
    #: test cases: name -> constructor arguments
    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: per-group overrides in tests (three groups with different values)
    group_overrides: tuple[dict[str, Any], ...] = ({},)

    @property
    def bench_name(self) -> str:
        """Its name in ``fastopt bench``: ``FusedAdamW`` -> ``adamw``."""
        return self.name.removeprefix("Fused").lower()

    def cls(self) -> type:
        import fastopt.optim

        return getattr(fastopt.optim, self.name)


CATALOG: tuple[Optimizer, ...] = (
    Optimizer(
        "FusedSGD",
        "sgd",
        "SGD momentum",
        Target("torch.optim:SGD", dict(foreach=False)),
        peers=_torch("SGD"),
        bench_kwargs=dict(lr=0.1, momentum=0.9, weight_decay=1e-4),
        traffic=(2, 1, 2),
        cases={
            "sgd": dict(lr=0.1),
            "sgd_momentum": dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2),
            "sgd_nesterov": dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
            "sgd_maximize": dict(lr=0.05, momentum=0.5, maximize=True),
        },
        group_overrides=({}, {"lr": 0.01, "weight_decay": 0.1}, {"momentum": 0.0}),
    ),
    Optimizer(
        "FusedAdam",
        "adam",
        "Adam",
        Target("torch.optim:Adam", dict(foreach=False)),
        peers=_torch("Adam"),
        bench_kwargs=dict(lr=1e-3),
        traffic=(2, 1, 4),
        cases={
            "adam": dict(lr=1e-2),
            "adam_l2_amsgrad": dict(lr=1e-2, weight_decay=0.1, amsgrad=True),
            "adam_maximize": dict(lr=1e-2, betas=(0.8, 0.99), maximize=True),
            "adam_low_beta": dict(lr=1e-2, betas=(0.3, 0.9), eps=1e-6),
        },
        group_overrides=({}, {"lr": 3e-3, "weight_decay": 0.01}, {"betas": (0.5, 0.9)}),
    ),
    Optimizer(
        "FusedAdamW",
        "adam",
        "AdamW",
        Target("torch.optim:AdamW", dict(foreach=False)),
        peers=_torch("AdamW"),
        bench_kwargs=dict(lr=1e-3, weight_decay=1e-2),
        traffic=(2, 1, 4),
        cases={
            "adamw": dict(lr=1e-2, weight_decay=0.05),
            "adamw_amsgrad": dict(lr=1e-2, weight_decay=0.05, amsgrad=True),
        },
        group_overrides=({}, {"lr": 3e-3, "weight_decay": 0.0}, {"betas": (0.5, 0.9)}),
    ),
    Optimizer(
        "FusedLARS",
        "lars",
        "LARS",
        Target("fastopt.benchmark.references:ReferenceLARS"),
        aliases=("LARS",),
        peers={"for-loop": Target("fastopt.benchmark.references:ReferenceLARS")},
        bench_kwargs=dict(lr=0.3, momentum=0.9, weight_decay=1e-6, eta=1e-3),
        paramwise_extra=dict(lars_exclude=True),
        traffic=(3, 2, 2),  # the norm pass reads p and g; the update as SGD momentum
        cases={
            "lars": dict(lr=0.1, momentum=0.9, weight_decay=1e-4),
            "lars_nesterov": dict(lr=0.1, momentum=0.9, nesterov=True, eta=0.02),
            "lars_no_momentum": dict(lr=0.1, weight_decay=1e-4),
        },
        group_overrides=(
            {},
            {"lr": 0.01, "lars_exclude": True},
            {"momentum": 0.5, "weight_decay": 0.0},
        ),
    ),
    Optimizer(
        "FusedAdagrad",
        "adagrad",
        "Adagrad",
        Target("torch.optim:Adagrad", dict(foreach=False)),
        peers=_torch("Adagrad"),
        bench_kwargs=dict(lr=1e-2),
        traffic=(2, 1, 2),
        cases={
            "adagrad": dict(lr=0.1),
            "adagrad_decay": dict(
                lr=0.1, lr_decay=0.05, weight_decay=0.01, initial_accumulator_value=0.3
            ),
            "adagrad_maximize": dict(lr=0.05, eps=1e-6, maximize=True),
        },
        group_overrides=({}, {"lr": 0.02, "weight_decay": 0.1}, {"lr_decay": 0.2}),
    ),
    Optimizer(
        "FusedRMSprop",
        "rmsprop",
        "RMSprop",
        Target("torch.optim:RMSprop", dict(foreach=False)),
        peers={k: v for k, v in _torch("RMSprop").items() if k != "fused"},
        bench_kwargs=dict(lr=1e-3, momentum=0.9),
        traffic=(2, 1, 4),
        cases={
            "rmsprop": dict(lr=1e-2),
            "rmsprop_momentum": dict(lr=1e-2, momentum=0.9, weight_decay=0.01),
            "rmsprop_centered": dict(lr=1e-2, centered=True, alpha=0.9),
            "rmsprop_all": dict(lr=1e-2, momentum=0.5, centered=True, alpha=0.6, maximize=True),
        },
        group_overrides=({}, {"lr": 3e-3, "weight_decay": 0.1}, {"alpha": 0.5}),
    ),
    Optimizer(
        "FusedLion",
        "lion",
        "Lion",
        Target("lion_pytorch:Lion"),
        aliases=("Lion",),
        peers={
            "for-loop": Target("lion_pytorch:Lion"),
            "foreach": Target("pytorch_optimizer:Lion", dict(foreach=True)),
        },
        bench_kwargs=dict(lr=1e-4, weight_decay=1e-2),
        traffic=(2, 1, 2),
        cases={
            "lion": dict(lr=1e-3),
            "lion_wd": dict(lr=3e-3, betas=(0.8, 0.95), weight_decay=0.1),
        },
        group_overrides=({}, {"lr": 1e-4, "weight_decay": 0.5}, {"betas": (0.5, 0.9)}),
    ),
    Optimizer(
        "FusedAdan",
        "adan",
        "Adan",
        Target("fastopt.benchmark.references:ReferenceAdan"),
        aliases=("Adan",),
        peers={
            "for-loop": Target("fastopt.benchmark.references:ReferenceAdan"),
            "foreach": Target("pytorch_optimizer:Adan", dict(foreach=True)),
        },
        bench_kwargs=dict(lr=1e-3, weight_decay=0.02),
        traffic=(2, 1, 8),
        cases={
            "adan": dict(lr=1e-2),
            "adan_wd": dict(lr=1e-2, weight_decay=0.05),
            "adan_no_prox": dict(lr=1e-2, weight_decay=0.05, no_prox=True, betas=(0.9, 0.8, 0.95)),
        },
        group_overrides=({}, {"lr": 3e-3, "weight_decay": 0.1}, {"betas": (0.5, 0.6, 0.9)}),
    ),
    Optimizer(
        "FusedLAMB",
        "lamb",
        "LAMB",
        Target("fastopt.benchmark.references:ReferenceLamb"),
        aliases=("Lamb",),
        peers={
            "for-loop": Target("fastopt.benchmark.references:ReferenceLamb"),
            "foreach": Target("pytorch_optimizer:Lamb", dict(foreach=True)),
        },
        bench_kwargs=dict(lr=1e-3, weight_decay=1e-2),
        # the global grad-norm pass (max_grad_norm) reads g; the reduction pass reads p, g and
        # both moments (the direction's and the param's norms in one read)
        traffic=(3, 3, 6),
        cases={
            "lamb": dict(lr=1e-2),
            "lamb_no_clip": dict(lr=1e-2, max_grad_norm=None, weight_decay=0.0),
            "lamb_adapt_all": dict(
                lr=1e-2, weight_decay=0.0, always_adapt=True, trust_clip=True, max_grad_norm=3.0
            ),
            "lamb_plain": dict(
                lr=1e-2, bias_correction=False, grad_averaging=False, weight_decay=0.1
            ),
        },
        group_overrides=({}, {"lr": 3e-3, "weight_decay": 0.0}, {"betas": (0.5, 0.9)}),
    ),
)

BY_NAME: dict[str, Optimizer] = {o.name: o for o in CATALOG}


def get(name: str) -> Optimizer:
    """The catalog entry of a fused optimizer class name."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no fused optimizer {name!r}; known: {', '.join(BY_NAME)}") from None


def registry_names() -> dict[str, str]:
    """Every registry name of a fused optimizer (class names and aliases) -> its class name."""
    names = {o.name: o.name for o in CATALOG}
    names.update({alias: o.name for o in CATALOG for alias in o.aliases})
    return names


#: engine ops that are not optimizers: op -> what runs it (the averaged models, one engine pass
#: over all their tensors; fastopt.ops.averaging)
NON_OPTIMIZER_OPS: dict[str, str] = {"ema": "fastopt.ops.averaging:AveragingTable"}
