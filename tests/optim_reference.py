"""Reference implementations the fused optimizers are tested against: the catalog's
(:mod:`fastopt.catalog`), by fused class name."""

from __future__ import annotations

from fastopt.benchmark.references import reference_lars_class
from fastopt.catalog import CATALOG

# mmpretrain's LARS written from its rule (reference doc §2), one tensor at a time: the same
# baseline `fastopt bench` times
ReferenceLARS = reference_lars_class()

TORCH_FOR_LOOP = {entry.name: entry.reference.build for entry in CATALOG}
