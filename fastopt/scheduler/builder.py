"""Build a config's ``param_scheduler`` list the way MMEngine's Runner does.

The Runner (``Runner.build_param_scheduler``) deep-copies every config, fills in ``end``
when it is missing -- ``max_epochs`` for an epoch-based scheduler, ``max_iters`` for an
iteration-based one -- and builds it from ``PARAM_SCHEDULERS`` with
``default_args=dict(optimizer=..., epoch_length=len(train_dataloader))``; ``epoch_length``
is only used by ``convert_to_iter_based=True``. Constructors apply step 0 in list order.
Keeping this in one function lets the runner and ``fastopt plot-schedule`` agree.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from fastopt.registry import PARAM_SCHEDULERS
from fastopt.registry.errors import config_origin

from .base import HasParamGroups, _ParamScheduler


def build_param_schedulers(
    cfg: Mapping[str, Any] | Sequence[Mapping[str, Any] | _ParamScheduler] | _ParamScheduler,
    optimizer: HasParamGroups,
    *,
    epoch_length: int | None = None,
    max_epochs: int | None = None,
    max_iters: int | None = None,
) -> list[_ParamScheduler]:
    """Build one optimizer's schedulers from a ``param_scheduler`` config.

    Args:
        cfg: A scheduler config dict, a list of them, or already built schedulers
            (returned as they are).
        optimizer: The optimizer or OptimWrapper the schedulers drive.
        epoch_length: Iterations per epoch (``len(train_dataloader)``).
        max_epochs: Training length in epochs; default ``end`` of ``by_epoch`` schedulers.
        max_iters: Training length in iterations; default ``end`` of the others.

    Returns:
        The schedulers, built in config order.
    """
    items = [cfg] if isinstance(cfg, (Mapping, _ParamScheduler)) else list(cfg)
    schedulers: list[_ParamScheduler] = []
    for item in items:
        if isinstance(item, _ParamScheduler):
            schedulers.append(item)
            continue
        if not isinstance(item, Mapping):
            raise TypeError(
                "param_scheduler entries should be config dicts or built schedulers, "
                f"but got {type(item).__name__}"
            )
        # a ConfigDict stays one: it knows its config file and key for error messages
        item = copy.deepcopy(item) if isinstance(item, dict) else dict(item)
        default_end = max_epochs if item.get("by_epoch", True) else max_iters
        if default_end is not None:
            item.setdefault("end", default_end)
        default_args: dict[str, Any] = {"optimizer": optimizer}
        if epoch_length is not None:
            default_args["epoch_length"] = epoch_length
        try:
            schedulers.append(PARAM_SCHEDULERS.build(item, default_args=default_args))
        except (TypeError, ValueError) as e:
            origin = config_origin(item)
            # subclasses (BuildArgumentError, ...) name the config key already
            if type(e) not in (TypeError, ValueError) or not origin:
                raise
            raise type(e)(f"{e} (in {origin})") from e
    return schedulers
