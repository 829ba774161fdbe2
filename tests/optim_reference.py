"""Reference implementations the fused optimizers are tested against: the catalog's
(:mod:`fastopt.catalog`), by fused class name; the catalog's test cases and param groups; and
the engine a test builds plans with."""

from __future__ import annotations

import contextlib

import fastopt._ext
from fastopt.benchmark.references import reference_lars_class
from fastopt.catalog import CATALOG

# mmpretrain's LARS written from its rule (reference doc §2), one tensor at a time: the same
# baseline `fastopt bench` times
ReferenceLARS = reference_lars_class()

TORCH_FOR_LOOP = {entry.name: entry.reference.build for entry in CATALOG}

# every optimizer's test cases (case name -> (fused class name, kwargs)) and per-group
# overrides, from the catalog
CASES = {case: (o.name, kw) for o in CATALOG for case, kw in o.cases.items()}
GROUP_OVERRIDES = {o.name: list(o.group_overrides) for o in CATALOG}
# one case per optimizer, for the layouts and element types (three for SGD/Adam/AdamW)
ONE_CASE_EACH = ["sgd_momentum", "adam_l2_amsgrad", "adamw"] + [
    next(iter(o.cases)) for o in CATALOG if o.name not in ("FusedSGD", "FusedAdam", "FusedAdamW")
]


def grouped(name: str, params: list) -> list[dict]:
    """``params`` dealt round-robin into the param groups of optimizer ``name``'s overrides."""
    groups = [{"params": [], **o} for o in GROUP_OVERRIDES[name]]
    for i, p in enumerate(params):
        groups[i % len(groups)]["params"].append(p)
    return groups


@contextlib.contextmanager
def engine(module):
    """Build fused optimizers' plans with `module` (_C: CPU engine, _C_simt: emulated CUDA)."""
    saved = fastopt._ext._C
    fastopt._ext._C = module
    try:
        yield
    finally:
        fastopt._ext._C = saved
