"""A ``get_layer_depth(param_name) -> (layer_id, num_layers)`` for models that lack one.

Layer-wise lr decay needs each param's depth. mmpretrain models provide ``get_layer_depth``;
for others, :func:`infer_get_layer_depth` recognises the usual parameter names and applies
mmpretrain's rules for the same architecture:

* **ViT** (``layers.N.`` as mmpretrain, ``blocks.N.`` as timm, ``encoder.layer.N.`` as
  Hugging Face): embeddings (``cls_token``, ``pos_embed``, ``patch_embed.*``; also timm/HF
  ``dist_token``, ``reg_token``, ``mask_token``, ``embeddings.*``) are layer 0, block ``i`` is
  layer ``i + 1``, everything else (final norm, head) is the last layer; ``num_layers =
  blocks + 2``.
* **Swin** (``stages.S.blocks.B.``): patch embedding 0, block ``B`` of stage ``S`` is
  ``sum(depths[:S]) + B + 1``, a stage's downsample ``sum(depths[:S + 1])``, the rest last;
  ``num_layers = sum(depths) + 2``.
* **ConvNeXt** (``downsample_layers.S.``, ``stages.S.B.``): mmpretrain's 12-layer
  (or 6-layer when stage 2 has at most 9 blocks) mapping.

Params outside the backbone (the part of the name before the matched blocks, e.g.
``backbone.``) belong to the last layer, as the head does in mmpretrain.

A rule is applied only to the layout it was written for: names that match its blocks but lack
the architecture's other parts are refused (NotImplementedError) rather than given depths that
mean nothing, e.g. ``layers.N.blocks.M`` (MixMIM, timm's Swin: blocks nested in stages, not the
ViT's flat ``layers.N``), ``stages.S.blocks.B`` without a ``patch_embed`` (timm's ConvNeXt) or
``stages.S.B`` without ConvNeXt's ``downsample_layers`` and four stages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from torch import nn

LayerDepthFn = Callable[[str], "tuple[int, int]"]

# `prefix`: the part of the name before the first (leftmost) block container
_CONVNEXT = re.compile(r"^(?P<prefix>(?:.*?\.)??)stages\.(?P<stage>\d+)\.(?P<block>\d+)\.")
_SWIN = re.compile(r"^(?P<prefix>(?:.*?\.)??)stages\.(?P<stage>\d+)\.blocks\.(?P<block>\d+)\.")
_VIT = re.compile(r"^(?P<prefix>(?:.*?\.)??)(?:layers|blocks|encoder\.layer)\.(?P<block>\d+)\.")
_VIT_STEM_NAMES = {"cls_token", "pos_embed", "dist_token", "reg_token", "mask_token"}
_VIT_STEM_MODULES = ("patch_embed", "embeddings")
# a ViT "block" that is a stage of blocks: its index is followed by another (`blocks.0.`, `0.`),
# or the blocks sit in an indexed stage (the prefix ends with `stages.0.`)
_NESTED_AFTER = re.compile(r"^(?:[A-Za-z_]\w*\.)?\d+\.")
_NESTED_BEFORE = re.compile(r"(?:^|\.)stages\.\d+\.$")
_GIVE_A_METHOD = (
    "Add a get_layer_depth(param_name) -> (layer_id, num_layers) method to the model, or pass "
    "get_layer_depth to LearningRateDecayOptimWrapperConstructor."
)


def _refuse(why: str) -> NoReturn:
    raise NotImplementedError(
        f"Layer-wise lr decay needs each parameter's depth, and it cannot be inferred: {why}. "
        + _GIVE_A_METHOD
    )


def _common_prefix(matches: list[re.Match]) -> str:
    prefixes = {m.group("prefix") for m in matches}
    if len(prefixes) != 1:
        _refuse(f"found transformer/conv blocks under several prefixes {sorted(prefixes)}")
    return prefixes.pop()


def _under(names: list[str], prefix: str) -> list[str]:
    return [n[len(prefix) :] for n in names if n.startswith(prefix)]


def _vit(names: list[str], matches: list[re.Match]) -> LayerDepthFn:
    nested = next(
        (
            m.string
            for m in matches
            if _NESTED_AFTER.match(m.string[m.end() :]) or _NESTED_BEFORE.search(m["prefix"])
        ),
        None,
    )
    if nested is not None:
        _refuse(
            f"{nested!r} has blocks nested in stages (as MixMIM's or timm's Swin "
            "'layers.N.blocks.M'), which the ViT rule (block N at 'layers.N.') does not fit"
        )
    prefix = _common_prefix(matches)
    if not any(
        rel.split(".")[0] in _VIT_STEM_NAMES or rel.startswith(_VIT_STEM_MODULES)
        for rel in _under(names, prefix)
    ):
        _refuse(
            f"the parameters have ViT-style blocks ({matches[0].string!r}) but no ViT embedding "
            f"({', '.join(sorted(_VIT_STEM_NAMES))}, {', '.join(_VIT_STEM_MODULES)}) under "
            f"{prefix!r}, so layer 0 is unknown"
        )
    num_layers = max(int(m.group("block")) for m in matches) + 1 + 2

    def get_layer_depth(param_name: str) -> tuple[int, int]:
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        rel = param_name[len(prefix) :]
        m = _VIT.match(rel)
        if m and not m.group("prefix"):
            return int(m.group("block")) + 1, num_layers
        if rel.split(".")[0] in _VIT_STEM_NAMES or rel.startswith(_VIT_STEM_MODULES):
            return 0, num_layers
        return num_layers - 1, num_layers

    return get_layer_depth


def _swin(names: list[str], matches: list[re.Match]) -> LayerDepthFn:
    prefix = _common_prefix(matches)
    if not any(rel.startswith("patch_embed") for rel in _under(names, prefix)):
        _refuse(
            f"the parameters have Swin-style blocks ({matches[0].string!r}) but no "
            f"{prefix}patch_embed (timm's ConvNeXt has such names too)"
        )
    depths_by_stage: dict[int, int] = {}
    for m in matches:
        stage, block = int(m.group("stage")), int(m.group("block"))
        depths_by_stage[stage] = max(depths_by_stage.get(stage, 0), block + 1)
    depths = [depths_by_stage.get(s, 0) for s in range(max(depths_by_stage) + 1)]
    num_layers = sum(depths) + 2

    def get_layer_depth(param_name: str) -> tuple[int, int]:
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        rel = param_name[len(prefix) :]
        if rel.startswith("patch_embed"):
            return 0, num_layers
        parts = rel.split(".")
        if parts[0] == "stages" and len(parts) > 3:
            stage = int(parts[1])
            if parts[2] == "blocks":
                return sum(depths[:stage]) + int(parts[3]) + 1, num_layers
            return sum(depths[: stage + 1]), num_layers  # downsample between stages
        return num_layers - 1, num_layers

    return get_layer_depth


def _convnext(names: list[str], matches: list[re.Match]) -> LayerDepthFn:
    prefix = _common_prefix(matches)
    stages = {int(m.group("stage")) for m in matches}
    if stages != {0, 1, 2, 3} or not any(
        rel.startswith("downsample_layers.") for rel in _under(names, prefix)
    ):
        _refuse(
            f"the parameters have blocks named like ConvNeXt's ({matches[0].string!r}), but not "
            f"its layout: four stages (found {sorted(stages)}) and "
            f"{prefix}downsample_layers"
        )
    blocks_in_stage2 = 1 + max(
        (int(m.group("block")) for m in matches if m.group("stage") == "2"), default=-1
    )
    max_layer_id = 12 if blocks_in_stage2 > 9 else 6

    def get_layer_depth(param_name: str) -> tuple[int, int]:
        if not param_name.startswith(prefix):
            return max_layer_id + 1, max_layer_id + 2
        parts = param_name[len(prefix) :].split(".")
        if parts[0] == "downsample_layers":
            stage = int(parts[1])
            layer_id = 0 if stage == 0 else stage + 1 if stage in (1, 2) else max_layer_id
        elif parts[0] == "stages":
            stage, block = int(parts[1]), int(parts[2])
            if stage in (0, 1):
                layer_id = stage + 1
            elif stage == 2:
                layer_id = 3 + block // 3
            else:
                layer_id = max_layer_id
        else:  # final norm
            layer_id = max_layer_id + 1
        return layer_id, max_layer_id + 2

    return get_layer_depth


def infer_get_layer_depth(model: nn.Module | Iterable[str]) -> LayerDepthFn:
    """Guess ``get_layer_depth`` from the parameter names of ``model`` (see module docs).

    Raises:
        NotImplementedError: the names match none of the known architectures, or match one's
            blocks but not its layout.
    """
    names = (
        [n for n, _ in model.named_parameters()] if isinstance(model, nn.Module) else list(model)
    )
    for pattern, factory in ((_SWIN, _swin), (_CONVNEXT, _convnext), (_VIT, _vit)):
        matches = [m for m in (pattern.match(n) for n in names) if m]
        if matches:
            return factory(names, matches)
    _refuse(
        "the model has no get_layer_depth method and its parameter names match no known "
        "layout (ViT 'layers.N.'/'blocks.N.'/'encoder.layer.N.', Swin 'stages.S.blocks.B.', "
        "ConvNeXt 'stages.S.B.')"
    )


def resolve_get_layer_depth(model: nn.Module, given: Any = None) -> LayerDepthFn:
    """The function to use: the one given, else the model's method, else an inferred one."""
    if given is not None:
        if not callable(given):
            raise TypeError(f"get_layer_depth must be callable, but got {type(given)}")
        return given
    own = getattr(model, "get_layer_depth", None)
    if callable(own):
        return own
    return infer_get_layer_depth(model)
