"""Layer-wise learning-rate decay (mmpretrain's ``LearningRateDecayOptimWrapperConstructor``).

A param at depth ``layer_id`` of ``num_layers`` gets ``lr = base_lr * layer_decay_rate **
(num_layers - layer_id - 1)``: the head trains at ``base_lr``, earlier layers slower.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn

from fastopt.registry import OPTIM_WRAPPER_CONSTRUCTORS

from .default_constructor import DefaultOptimWrapperConstructor, is_norm, user_stacklevel
from .layer_depth import LayerDepthFn, resolve_get_layer_depth

logger = logging.getLogger(__name__)


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LearningRateDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """Param groups with layer-wise lr decay and weight-decay rules (mmpretrain semantics).

    ``paramwise_cfg`` keys: ``layer_decay_rate`` (default 1.0), and for the weight decay (only
    when the optimizer has ``weight_decay``), first match wins: ``custom_keys`` (longest key,
    then alphabetical; ``decay_mult`` scales, the other keys are copied into the group,
    ``lr_mult`` has no effect), ``norm_decay_mult``, ``bias_decay_mult``, ``flat_decay_mult``
    (1-D params), else ``weight_decay`` itself. Param names have no leading dot
    (``cls_token``, ``backbone.layers.0...``).

    Each group also gets ``lr_scale``, ``layer_id`` and ``param_name``. The depth comes from
    ``get_layer_depth`` (argument), else the model's ``get_layer_depth`` method, else
    :func:`~fastopt.constructor.layer_depth.infer_get_layer_depth` (ViT, Swin, ConvNeXt names).
    """

    # the paramwise_cfg keys this constructor reads
    PARAMWISE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "layer_decay_rate",
            "custom_keys",
            "bias_decay_mult",
            "norm_decay_mult",
            "flat_decay_mult",
            "bypass_duplicate",
        }
    )

    def __init__(
        self,
        optim_wrapper_cfg: Mapping[str, Any],
        paramwise_cfg: Mapping[str, Any] | None = None,
        *,
        get_layer_depth: LayerDepthFn | None = None,
    ) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg)
        self.get_layer_depth = get_layer_depth

    def add_params(  # type: ignore[override]
        self,
        params: list[dict[str, Any]],
        module: nn.Module,
        prefix: str = "",
        get_layer_depth: LayerDepthFn | None = None,
        **kwargs: Any,
    ) -> None:
        """Append one group per trainable param of ``module`` (recursively) to ``params``."""
        root = prefix == ""
        if root:
            get_layer_depth = resolve_get_layer_depth(
                module, get_layer_depth or self.get_layer_depth
            )
            self._grouped = {id(p): "<given>" for group in params for p in group.get("params", [])}
            self._frozen: list[str] = []
            start = len(params)
        assert get_layer_depth is not None
        try:
            self._add_own_layer_params(params, module, prefix, get_layer_depth)
            for child_name, child in module.named_children():
                self.add_params(
                    params, child, prefix=f"{prefix}{child_name}.", get_layer_depth=get_layer_depth
                )
        finally:
            if root:
                frozen, self._frozen = self._frozen, []
                if frozen:
                    warnings.warn(
                        f"{', '.join(frozen)} {'is' if len(frozen) == 1 else 'are'} skipped "
                        "since requires_grad=False",
                        UserWarning,
                        stacklevel=user_stacklevel(),
                    )
        if root:
            self._log_layers(params[start:])

    def _add_own_layer_params(
        self,
        params: list[dict[str, Any]],
        module: nn.Module,
        prefix: str,
        get_layer_depth: LayerDepthFn,
    ) -> None:
        cfg = self.paramwise_cfg
        custom_keys = cfg.get("custom_keys", {})
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)
        bias_decay_mult = cfg.get("bias_decay_mult", None)
        norm_decay_mult = cfg.get("norm_decay_mult", None)
        flat_decay_mult = cfg.get("flat_decay_mult", None)
        decay_rate = cfg.get("layer_decay_rate", 1.0)
        bypass_duplicate = cfg.get("bypass_duplicate", False)
        module_is_norm = is_norm(module)
        grouped: dict[int, str] = self.__dict__.setdefault("_grouped", {})
        frozen: list[str] = self.__dict__.setdefault("_frozen", [])

        for name, param in module.named_parameters(recurse=False):
            param_name = prefix + name
            first = grouped.get(id(param))
            if first is not None and bypass_duplicate:
                warnings.warn(
                    f"{param_name} is duplicate (the same tensor as {first}). It is skipped "
                    "since bypass_duplicate=True",
                    UserWarning,
                    stacklevel=user_stacklevel(),
                )
                continue
            if not param.requires_grad:
                frozen.append(param_name)
                continue
            if first is not None:
                raise ValueError(
                    f"parameter {param_name} is the same tensor as {first} (tied or shared "
                    "weights), and a parameter can be in only one param group: set "
                    "paramwise_cfg.bypass_duplicate=True to keep the first one and skip the others"
                )
            group: dict[str, Any] = {"params": [param]}
            if self.base_wd is not None:
                custom_key = next((k for k in sorted_keys if k in param_name), None)
                if custom_key is not None:
                    options = dict(custom_keys[custom_key])
                    group["weight_decay"] = self._scaled_wd(options.pop("decay_mult", 1.0))
                    group.update(options)
                elif module_is_norm and norm_decay_mult is not None:
                    group["weight_decay"] = self._scaled_wd(norm_decay_mult)
                elif name == "bias" and bias_decay_mult is not None:
                    group["weight_decay"] = self._scaled_wd(bias_decay_mult)
                elif param.ndim == 1 and flat_decay_mult is not None:
                    group["weight_decay"] = self._scaled_wd(flat_decay_mult)
                else:
                    group["weight_decay"] = self._scaled_wd(None)
            layer_id, num_layers = get_layer_depth(param_name)
            scale = decay_rate ** (num_layers - layer_id - 1)
            group["lr"] = self._scaled_lr(scale, "layer_decay_rate")
            group["lr_scale"] = scale
            group["layer_id"] = layer_id
            group["param_name"] = param_name
            grouped[id(param)] = param_name
            params.append(group)

    @staticmethod
    def _log_layers(groups: list[dict[str, Any]]) -> None:
        by_layer: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for group in groups:
            by_layer[group["layer_id"]].append(group)
        for layer_id, layer_groups in by_layer.items():
            lines = [f"layer {layer_id} params:"]
            for g in layer_groups:
                wd = g.get("weight_decay")
                wd_text = f", weight_decay={wd:.3g}" if wd is not None else ""
                lines.append(f"\t{g['param_name']}: lr={g['lr']:.3g}{wd_text}")
            logger.info("\n".join(lines))
