"""Reference implementations the fused optimizers are tested against: the catalog's
(:mod:`fastopt.catalog`), by fused class name; and the engine a test builds plans with."""

from __future__ import annotations

import contextlib

import fastopt._ext
from fastopt.benchmark.references import reference_lars_class
from fastopt.catalog import CATALOG

# mmpretrain's LARS written from its rule (reference doc §2), one tensor at a time: the same
# baseline `fastopt bench` times
ReferenceLARS = reference_lars_class()

TORCH_FOR_LOOP = {entry.name: entry.reference.build for entry in CATALOG}


@contextlib.contextmanager
def engine(module):
    """Build fused optimizers' plans with `module` (_C: CPU engine, _C_simt: emulated CUDA)."""
    saved = fastopt._ext._C
    fastopt._ext._C = module
    try:
        yield
    finally:
        fastopt._ext._C = saved
