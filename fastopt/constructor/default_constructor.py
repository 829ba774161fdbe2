"""``DefaultOptimWrapperConstructor``: param groups from ``paramwise_cfg`` (MMEngine rules).

Every parameter gets its own group (DFS order: a module's own params, then its children), with
``lr`` / ``weight_decay`` set only where a rule applies; torch fills the rest from the optimizer
defaults. fastopt's fused optimizers update all groups in one pass, so many groups cost nothing.
"""

from __future__ import annotations

import copy
import difflib
import inspect
import logging
import os
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from fastopt.config.config_dict import ConfigDict
from fastopt.registry import (
    OPTIM_WRAPPER_CONSTRUCTORS,
    OPTIM_WRAPPERS,
    OPTIMIZERS,
    MissingTypeError,
    resolve_type,
)

from .arguments import (
    OPTIMIZER_PATH,
    PARAMWISE_PATH,
    check_fixed_lengths,
    is_number,
    key_origin,
    name_rejected_value,
)

logger = logging.getLogger(__name__)

NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)
# mmcv's deformable convs; matched by class name so that mmcv need not be importable
_DCN_NAMES = frozenset({"DeformConv2d", "ModulatedDeformConv2d"})


def user_stacklevel() -> int:
    """``stacklevel`` for a warning that points at the first caller outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    frame, level = sys._getframe(1), 1
    while (
        frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package
    ):
        frame, level = frame.f_back, level + 1
    return level


def is_norm(module: nn.Module) -> bool:
    """BatchNorm (incl. SyncBatchNorm), InstanceNorm, GroupNorm, LayerNorm: MMEngine's set."""
    return isinstance(module, NORM_TYPES)


def is_dcn(module: nn.Module) -> bool:
    """An mmcv ``DeformConv2d`` / ``ModulatedDeformConv2d`` (or a subclass, e.g. ``*Pack``)."""
    return any(cls.__name__ in _DCN_NAMES for cls in type(module).__mro__)


def copy_config(cfg: Mapping[str, Any]) -> ConfigDict:
    """A deep copy as a ConfigDict; keeps where a loaded config came from (for errors)."""
    return copy.deepcopy(cfg if isinstance(cfg, ConfigDict) else ConfigDict(cfg))


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DefaultOptimWrapperConstructor:
    """Builds an optimizer wrapper whose param groups follow ``paramwise_cfg``.

    ``paramwise_cfg`` keys (all optional):

    * ``custom_keys``: ``{substring: dict(lr_mult=, decay_mult=, **extra)}``, matched against
      ``'{module}.{param}'`` (top-level params as ``'.name'``); the longest key wins, ties go to
      the alphabetically smaller one; a match sets ``lr`` and ``weight_decay`` (multipliers
      default to 1), copies every key of the dict into the group (e.g. ``lars_exclude``) and
      disables all other rules for that param.
    * ``bias_lr_mult``: lr of params named ``bias`` (not of norm layers).
    * ``bias_decay_mult``, ``norm_decay_mult``, ``dwconv_decay_mult``, ``flat_decay_mult``:
      weight decay of biases, of norm layers' params, of depthwise ``Conv2d`` params and of
      other 1-D params; when several apply, norm > bias > dwconv > flat.
    * ``dcn_offset_lr_mult``: lr of the ``conv_offset`` of mmcv deformable convs.
    * ``bypass_duplicate``: skip (with a warning) a param already in an earlier group.

    Frozen params (``requires_grad=False``) are left out, with a warning. Without a
    ``paramwise_cfg`` the optimizer gets ``model.parameters()`` as one group.

    Another ``paramwise_cfg`` key is an error (MMEngine ignores it) naming the closest key. A
    subclass reading more keys lists them in its own ``PARAMWISE_KEYS``; one that does not is
    only warned about the keys it does not list.

    Args:
        optim_wrapper_cfg: the ``optim_wrapper`` config; must contain ``optimizer``.
        paramwise_cfg: the rules above, or None.
    """

    # the paramwise_cfg keys this constructor reads
    PARAMWISE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "custom_keys",
            "bias_lr_mult",
            "bias_decay_mult",
            "norm_decay_mult",
            "dwconv_decay_mult",
            "flat_decay_mult",
            "dcn_offset_lr_mult",
            "bypass_duplicate",
        }
    )

    def __init__(
        self, optim_wrapper_cfg: Mapping[str, Any], paramwise_cfg: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(optim_wrapper_cfg, Mapping):
            raise TypeError("optimizer_cfg should be a dict", f"but got {type(optim_wrapper_cfg)}")
        if "optimizer" not in optim_wrapper_cfg:
            raise AssertionError('`optim_wrapper_cfg` must contain "optimizer" config')
        self.optim_wrapper_cfg = copy_config(optim_wrapper_cfg)
        self.optimizer_cfg = self.optim_wrapper_cfg.pop("optimizer")
        if not isinstance(self.optimizer_cfg, Mapping):
            raise TypeError(
                "optim_wrapper.optimizer should be a config dict here, but got "
                f"{type(self.optimizer_cfg)} (a built optimizer goes straight to OPTIM_WRAPPERS)"
            )
        self.paramwise_cfg: Any = {} if paramwise_cfg is None else copy.deepcopy(paramwise_cfg)
        self.base_lr = self.optimizer_cfg.get("lr", None)
        self.base_wd = self.optimizer_cfg.get("weight_decay", None)
        self._validate_cfg()

    def _paramwise_origin(self, key: str) -> str:
        return key_origin(self.paramwise_cfg, key, PARAMWISE_PATH)

    def _validate_cfg(self) -> None:
        if not isinstance(self.paramwise_cfg, Mapping):
            raise TypeError(
                f"paramwise_cfg should be None or a dict, but got {type(self.paramwise_cfg)}"
            )
        self._check_paramwise_keys()
        for name, value in self.paramwise_cfg.items():
            scales = isinstance(name, str) and (
                name.endswith("_mult") or name == "layer_decay_rate"
            )
            if scales and value is not None:
                self._check_number(value, name, self._paramwise_origin(name))
        custom_keys = self.paramwise_cfg.get("custom_keys", None)
        if custom_keys is not None:
            if not isinstance(custom_keys, Mapping):
                raise TypeError(
                    f"If specified, custom_keys must be a dict, but got {type(custom_keys)} "
                    f"(in {self._paramwise_origin('custom_keys')})"
                )
            for key, options in custom_keys.items():
                origin = self._paramwise_origin(f"custom_keys[{key!r}]")
                if not isinstance(options, Mapping):
                    raise TypeError(
                        f"custom_keys[{key!r}] must be a dict such as dict(lr_mult=0.1), but "
                        f"got {options!r} (in {origin})"
                    )
                for name in ("lr_mult", "decay_mult"):
                    if name in options:
                        self._check_number(options[name], name, f"{origin}.{name}")
                if self.base_wd is None and "decay_mult" in options:
                    raise ValueError(
                        f"base_wd should not be None: custom_keys[{key!r}] sets decay_mult but "
                        f"the optimizer config has no weight_decay (in {origin})"
                    )
        if self.base_wd is None:
            for name in ("bias_decay_mult", "norm_decay_mult", "dwconv_decay_mult"):
                if name in self.paramwise_cfg:
                    raise ValueError(
                        f"base_wd should not be None: {name} is set but the optimizer config "
                        f"has no weight_decay (in {self._paramwise_origin(name)})"
                    )

    def _check_paramwise_keys(self) -> None:
        known = self.PARAMWISE_KEYS
        # a subclass that lists its keys gets errors; one that may read keys it does not list
        # gets warnings
        strict = "PARAMWISE_KEYS" in type(self).__dict__
        for key in self.paramwise_cfg:
            if key in known or key == "_delete_":  # MMEngine keeps `_delete_` with no base
                continue
            close = difflib.get_close_matches(str(key), sorted(known), n=1)
            message = (
                f"{key!r} is not a paramwise_cfg key of {type(self).__name__}"
                + (f"; did you mean {close[0]!r}?" if close else "")
                + f" It reads: {', '.join(sorted(known))} (in {self._paramwise_origin(key)})"
            )
            if strict:
                raise ValueError(message)
            warnings.warn(
                message + f"; list the keys {type(self).__name__} reads in its PARAMWISE_KEYS",
                UserWarning,
                stacklevel=user_stacklevel(),
            )

    @staticmethod
    def _check_number(value: Any, name: str, origin: str) -> None:
        if not is_number(value):
            raise TypeError(f"{name} must be a number, but got {value!r} (in {origin})")

    # ---------------------------------------------------------------- build
    def __call__(self, model: nn.Module) -> Any:
        """Build the optimizer for ``model`` and wrap it (``type`` default ``'OptimWrapper'``)."""
        if hasattr(model, "module"):  # DDP / DataParallel
            model = model.module
        optim_wrapper_cfg = self.optim_wrapper_cfg.copy()
        optim_wrapper_cfg.setdefault("type", "OptimWrapper")
        optimizer_cfg = self.optimizer_cfg.copy()
        if "type" not in optimizer_cfg:
            raise MissingTypeError(
                '`optim_wrapper.optimizer` must contain the key "type", but got '
                f"{dict(optimizer_cfg)}"
            )
        with OPTIMIZERS.switch_scope_and_registry(None) as registry:
            optimizer_cls = resolve_type(optimizer_cfg["type"], registry, self.optimizer_cfg)
        type_name = getattr(optimizer_cls, "__name__", repr(optimizer_cls))
        custom_keys = self.paramwise_cfg.get("custom_keys") or {}
        check_fixed_lengths(
            optimizer_cls,
            [
                (self.optimizer_cfg, self._optimizer_origin),
                *((options, self._custom_key_origin(key)) for key, options in custom_keys.items()),
            ],
            type_name,
        )
        # the first argument takes the params (`params` in torch, `model_params` elsewhere)
        first_arg = next(iter(inspect.signature(optimizer_cls).parameters))
        if not self.paramwise_cfg:
            optimizer_cfg[first_arg] = model.parameters()
        else:
            params: list[dict[str, Any]] = []
            self.add_params(params, model)
            optimizer_cfg[first_arg] = params
        try:
            optimizer = OPTIMIZERS.build(optimizer_cfg)
        except (TypeError, ValueError) as e:
            if type(e) not in (TypeError, ValueError):
                raise  # e.g. BuildArgumentError: it names the config key already
            raise name_rejected_value(
                e, optimizer_cls, first_arg, self.optimizer_cfg, type_name
            ) from e
        return OPTIM_WRAPPERS.build(optim_wrapper_cfg, default_args=dict(optimizer=optimizer))

    def _optimizer_origin(self, key: str) -> str:
        return key_origin(self.optimizer_cfg, key, OPTIMIZER_PATH)

    def _custom_key_origin(self, custom_key: str) -> Callable[[str], str]:
        return lambda key: self._paramwise_origin(f"custom_keys[{custom_key!r}].{key}")

    # ---------------------------------------------------------------- param groups
    def add_params(
        self,
        params: list[dict[str, Any]],
        module: nn.Module,
        prefix: str = "",
        is_dcn_module: bool | None = None,
    ) -> None:
        """Append one group per param of ``module`` (recursively) to ``params``.

        ``is_dcn_module`` says whether the *parent* of ``module`` is a deformable conv.
        """
        root = prefix == "" and is_dcn_module is None
        if root:
            # names of params already grouped (for duplicate messages) and of frozen ones
            self._grouped = {id(p): "<given>" for group in params for p in group.get("params", [])}
            self._frozen: list[str] = []
        try:
            self._add_own_params(params, module, prefix, is_dcn_module)
            child_is_dcn = is_dcn(module)
            for child_name, child in module.named_children():
                child_prefix = f"{prefix}.{child_name}" if prefix else child_name
                self.add_params(params, child, prefix=child_prefix, is_dcn_module=child_is_dcn)
        finally:
            if root:
                frozen, self._frozen = self._frozen, []
                if frozen:
                    noun = "is" if len(frozen) == 1 else "are"
                    its = "its" if len(frozen) == 1 else "their"
                    warnings.warn(
                        f"{', '.join(frozen)} {noun} skipped since {its} requires_grad=False",
                        UserWarning,
                        stacklevel=user_stacklevel(),
                    )

    def _add_own_params(
        self,
        params: list[dict[str, Any]],
        module: nn.Module,
        prefix: str,
        is_dcn_module: bool | None,
    ) -> None:
        cfg = self.paramwise_cfg
        custom_keys = cfg.get("custom_keys", {})
        sorted_keys = sorted(sorted(custom_keys), key=len, reverse=True)  # longest, then a-z
        bias_lr_mult = cfg.get("bias_lr_mult", None)
        bias_decay_mult = cfg.get("bias_decay_mult", None)
        norm_decay_mult = cfg.get("norm_decay_mult", None)
        dwconv_decay_mult = cfg.get("dwconv_decay_mult", None)
        flat_decay_mult = cfg.get("flat_decay_mult", None)
        dcn_offset_lr_mult = cfg.get("dcn_offset_lr_mult", None)
        bypass_duplicate = cfg.get("bypass_duplicate", False)

        module_is_norm = is_norm(module)
        is_dwconv = isinstance(module, nn.Conv2d) and module.in_channels == module.groups
        grouped: dict[int, str] = self.__dict__.setdefault("_grouped", {})
        frozen: list[str] = self.__dict__.setdefault("_frozen", [])

        for name, param in module.named_parameters(recurse=False):
            full_name = f"{prefix}.{name}"  # top-level params read '.name', as in MMEngine
            display = full_name.lstrip(".")
            first = grouped.get(id(param))
            if first is not None and bypass_duplicate:
                warnings.warn(
                    f"{display} is duplicate (the same tensor as {first}). It is skipped since "
                    "bypass_duplicate=True",
                    UserWarning,
                    stacklevel=user_stacklevel(),
                )
                continue
            if not param.requires_grad:
                frozen.append(display)
                continue
            if first is not None:
                raise ValueError(
                    f"parameter {display} is the same tensor as {first} (tied or shared "
                    "weights), and a parameter can be in only one param group: set "
                    "paramwise_cfg.bypass_duplicate=True to keep the first one and skip the others"
                )
            group: dict[str, Any] = {"params": [param]}
            for key in sorted_keys:
                if key in full_name:
                    options = custom_keys[key]
                    group["lr"] = self._scaled_lr(
                        options.get("lr_mult", 1.0), f"custom_keys[{key!r}]"
                    )
                    if self.base_wd is not None:
                        group["weight_decay"] = self._scaled_wd(options.get("decay_mult", 1.0))
                    group.update(options)  # every key, e.g. lars_exclude, reaches the group
                    break
            else:
                if (
                    name == "bias"
                    and not (module_is_norm or is_dcn_module)
                    and bias_lr_mult is not None
                ):
                    group["lr"] = self._scaled_lr(bias_lr_mult, "bias_lr_mult")
                if (
                    "conv_offset" in prefix
                    and is_dcn_module
                    and dcn_offset_lr_mult is not None
                    and isinstance(module, nn.Conv2d)
                ):
                    group["lr"] = self._scaled_lr(dcn_offset_lr_mult, "dcn_offset_lr_mult")
                if self.base_wd is not None:
                    if module_is_norm and norm_decay_mult is not None:
                        group["weight_decay"] = self._scaled_wd(norm_decay_mult)
                    elif name == "bias" and not is_dcn_module and bias_decay_mult is not None:
                        group["weight_decay"] = self._scaled_wd(bias_decay_mult)
                    elif is_dwconv and dwconv_decay_mult is not None:
                        group["weight_decay"] = self._scaled_wd(dwconv_decay_mult)
                    elif param.ndim == 1 and not is_dcn_module and flat_decay_mult is not None:
                        group["weight_decay"] = self._scaled_wd(flat_decay_mult)
            grouped[id(param)] = display
            params.append(group)
            for key, value in group.items():
                if key != "params":
                    logger.info("paramwise_options -- %s:%s=%s", full_name, key, value)

    def _scaled_lr(self, mult: float, what: str) -> float:
        if self.base_lr is None:
            raise ValueError(
                f"paramwise_cfg.{what} scales the learning rate, but the optimizer config has no "
                f"lr (in {self._optimizer_origin('lr')})"
            )
        self._check_number(self.base_lr, "lr", self._optimizer_origin("lr"))
        return self.base_lr * mult

    def _scaled_wd(self, mult: float | None) -> float:
        """``weight_decay * mult``, or ``weight_decay`` itself for None (called only when the
        optimizer config has a weight_decay)."""
        self._check_number(self.base_wd, "weight_decay", self._optimizer_origin("weight_decay"))
        return self.base_wd if mult is None else self.base_wd * mult
