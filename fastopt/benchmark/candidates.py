"""The optimizers compared: fastopt's fused classes and their peers, from the optimizer catalog
(:mod:`fastopt.catalog`).

Implementations (``impl``): ``fastopt`` and the catalog's peer columns:

* ``for-loop``: a per-param loop — ``torch.optim.X(foreach=False)``, or the implementation an
  optimizer follows (lion-pytorch's ``Lion``; the references of mmpretrain's ``LARS`` and timm's
  ``Lamb`` / ``Adan`` written from their rules, the baselines their users run);
* ``foreach``: ``torch.optim.X(foreach=True)``, or pytorch-optimizer's foreach ``Lion`` /
  ``Lamb`` / ``Adan`` (installed on demand; their rules differ in details, not in cost);
* ``fused``: ``torch.optim.X(fused=True)`` where torch has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastopt.catalog import CATALOG, PEER_IMPLS, Target
from fastopt.catalog import Optimizer as CatalogEntry

if TYPE_CHECKING:
    import torch

    from fastopt.benchmark.param_sets import Params

IMPLS: tuple[str, ...] = ("fastopt", *PEER_IMPLS)
TORCH_IMPLS: tuple[str, ...] = PEER_IMPLS  # the peer columns of the tables


@dataclass(frozen=True)
class OptimSpec:
    """One optimizer of the comparison and the hyperparameters it is benchmarked with."""

    name: str
    label: str
    fused_cls: str
    peers: dict[str, Target] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: group keys set on the no-decay groups of paramwise sets
    paramwise_extra: dict[str, Any] = field(default_factory=dict)
    traffic: tuple[int, int, int] = (2, 1, 0)

    def impls(self) -> tuple[str, ...]:
        """The implementations that exist for this optimizer."""
        return ("fastopt", *(i for i in PEER_IMPLS if i in self.peers))

    @property
    def has_fused_peer(self) -> bool:
        """torch has a fused implementation (the pipeline benchmark compares with it)."""
        return "fused" in self.peers

    @classmethod
    def of(cls, entry: CatalogEntry) -> OptimSpec:
        return cls(
            entry.bench_name,
            entry.label,
            entry.name,
            dict(entry.peers),
            dict(entry.bench_kwargs),
            dict(entry.paramwise_extra),
            entry.traffic,
        )


OPTIMS: dict[str, OptimSpec] = {e.bench_name: OptimSpec.of(e) for e in CATALOG}


def get_optim(name: str) -> OptimSpec:
    try:
        return OPTIMS[name]
    except KeyError:
        raise KeyError(f"unknown optimizer {name!r}; known: {', '.join(OPTIMS)}") from None


def build_optimizer(spec: OptimSpec | str, impl: str, params: Params) -> torch.optim.Optimizer:
    """A fresh optimizer of implementation ``impl`` over ``params`` (states not yet created)."""
    import torch

    if isinstance(spec, str):
        spec = get_optim(spec)
    if impl not in spec.impls():
        raise ValueError(f"{spec.name} has no {impl!r} implementation; it has {spec.impls()}")
    groups = params.param_groups(spec.paramwise_extra)
    if impl == "fastopt":
        import fastopt.optim

        cls = getattr(fastopt.optim, spec.fused_cls)
        state_dtype: Any = "param" if params.states_in_param_dtype else torch.float32
        return cls(groups, **spec.kwargs, state_dtype=state_dtype)
    return spec.peers[impl].build(groups, **spec.kwargs)
