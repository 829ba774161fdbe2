"""Reference implementations the fused optimizers are tested against."""

from __future__ import annotations

import torch

from fastopt.benchmark.candidates import reference_lars_class

# mmpretrain's LARS written from its rule (reference doc §2), one tensor at a time: the same
# baseline `fastopt bench` times
ReferenceLARS = reference_lars_class()


TORCH_FOR_LOOP = {
    "FusedSGD": lambda params, **kw: torch.optim.SGD(params, foreach=False, **kw),
    "FusedAdam": lambda params, **kw: torch.optim.Adam(params, foreach=False, **kw),
    "FusedAdamW": lambda params, **kw: torch.optim.AdamW(params, foreach=False, **kw),
    "FusedLARS": lambda params, **kw: ReferenceLARS(params, **kw),
}
