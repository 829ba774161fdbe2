"""Small image classifiers for the example configs (registered in ``MODELS``).

* :class:`ClsDataPreprocessor` stacks a batch of uint8 images (a list from ``pseudo_collate``
  or a tensor from ``default_collate``), converts it to float and normalises it with
  ``mean``/``std`` given in 0-255 units, as MMPretrain's data preprocessor does.
* :class:`SmallCNN`: conv + BatchNorm stem, then depthwise-separable blocks (3x3 depthwise conv,
  BN, ReLU, 1x1 conv, BN, ReLU), global average pooling and a linear head.
* :class:`TinyViT`: 4x4 patches, a class token, learned position embeddings, a few
  pre-norm transformer layers.

Both classifiers follow the ``BaseModel`` protocol: ``forward(inputs, data_samples, mode)``
returns ``{'loss': cross entropy}`` for ``'loss'``, a list of per-sample dicts
(``pred_score``, ``pred_label``, ``gt_label``) for ``'predict'`` (what
:class:`~fastopt.evaluator.Accuracy` reads), and the logits for ``'tensor'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastopt.registry import MODELS

from .base_model import BaseModel
from .data_preprocessor import BaseDataPreprocessor


def _as_batch(items: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A tensor from a tensor or a list of tensors/numbers."""
    if isinstance(items, torch.Tensor):
        return items
    if isinstance(items, Sequence) and items and isinstance(items[0], torch.Tensor):
        return torch.stack(list(items))
    return torch.as_tensor(items, dtype=dtype)


@MODELS.register_module()
class ClsDataPreprocessor(BaseDataPreprocessor):
    """Stack, move, convert to float and normalise images; stack the labels.

    Args:
        mean: per-channel mean in the 0-255 range of the stored images (None: no
            normalisation, only the conversion to float in [0, 255]).
        std: per-channel standard deviation in the same units.
        non_blocking: see :class:`~fastopt.model.BaseDataPreprocessor`.

    Input: ``dict(inputs=..., data_samples=labels)``; output: ``dict(inputs=float tensor
    [N, C, H, W], data_samples=int64 tensor [N])`` on the model's device.
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(non_blocking)
        if (mean is None) != (std is None):
            raise ValueError("ClsDataPreprocessor needs both mean and std, or neither")
        self._normalize = mean is not None
        if mean is not None and std is not None:
            if len(mean) != len(std):
                raise ValueError(f"mean and std differ in length: {list(mean)} vs {list(std)}")
            if any(s <= 0 for s in std):
                raise ValueError(f"std must be positive, but got {list(std)}")
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)

    def forward(self, data: Any, training: bool = False) -> dict[str, Any]:
        """Preprocess one batch (see the class docstring)."""
        if not isinstance(data, dict) or "inputs" not in data:
            raise TypeError(
                "ClsDataPreprocessor expects a dict batch with 'inputs' (and 'data_samples'), "
                f"got {type(data).__name__}"
            )
        inputs = self.cast_data(_as_batch(data["inputs"])).float()
        if self._normalize:
            channels = self.mean.shape[0]
            if inputs.shape[1] != channels:
                raise ValueError(
                    f"images have {inputs.shape[1]} channels but mean/std give {channels}"
                )
            inputs = (inputs - self.mean) / self.std
        labels = data.get("data_samples")
        if labels is not None:
            labels = self.cast_data(_as_batch(labels, torch.int64)).long()
        return dict(inputs=inputs, data_samples=labels)


class _Classifier(BaseModel):
    """Cross-entropy training and per-sample predictions around ``self.logits(inputs)``."""

    def __init__(
        self,
        label_smoothing: float = 0.0,
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | list | None = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type="ClsDataPreprocessor")
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.label_smoothing = label_smoothing

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(
        self,
        inputs: torch.Tensor,
        data_samples: torch.Tensor | None = None,
        mode: str = "tensor",
    ) -> Any:
        """``'loss'``: ``{'loss': ...}``; ``'predict'``: list of dicts; ``'tensor'``: logits."""
        logits = self.logits(inputs)
        if mode == "tensor":
            return logits
        if mode == "loss":
            if data_samples is None:
                raise ValueError("mode='loss' needs the labels in data_samples")
            loss = F.cross_entropy(
                logits.float(), data_samples, label_smoothing=self.label_smoothing
            )
            return {"loss": loss}
        if mode == "predict":
            scores = logits.float().softmax(dim=1)
            labels = scores.argmax(dim=1)
            out = []
            for i in range(scores.shape[0]):
                sample = {"pred_score": scores[i], "pred_label": labels[i]}
                if data_samples is not None:
                    sample["gt_label"] = data_samples[i]
                out.append(sample)
            return out
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', but got {mode!r}")


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm + ReLU; parameters ``conv.weight``, ``bn.weight``, ``bn.bias``
    (MMCV's ``ConvModule`` names)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class DepthwiseSeparable(nn.Module):
    """3x3 depthwise conv + BN + ReLU, then 1x1 conv + BN + ReLU (MobileNet block)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.depthwise = ConvBN(cin, cin, 3, stride, groups=cin)
        self.pointwise = ConvBN(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


@MODELS.register_module()
class SmallCNN(_Classifier):
    """Conv-BN stem, depthwise-separable blocks, global pooling, linear head.

    Args:
        num_classes: outputs of the head.
        in_channels: image channels.
        widths: stem width, then the output width of each depthwise-separable block.
        strides: stride of each block (same length as ``widths[1:]``).
        dropout: dropout before the head.
        label_smoothing: of the cross-entropy loss.
        data_preprocessor: default ``ClsDataPreprocessor`` without normalisation.

    Parameter names: ``stem.{conv,bn}.*``, ``blocks.<i>.depthwise.{conv,bn}.*`` (grouped
    convs: ``dwconv_decay_mult``), ``blocks.<i>.pointwise.{conv,bn}.*``, ``head.{weight,bias}``;
    so ``custom_keys`` such as ``'bn'``, ``'bias'`` or ``'head'`` select what they say.
    """

    def __init__(
        self,
        num_classes: int = 8,
        in_channels: int = 3,
        widths: Sequence[int] = (24, 48, 96, 128),
        strides: Sequence[int] = (2, 2, 1),
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | list | None = None,
    ) -> None:
        super().__init__(label_smoothing, data_preprocessor, init_cfg)
        if len(strides) != len(widths) - 1:
            raise ValueError(
                f"strides needs one entry per block ({len(widths) - 1}), got {list(strides)}"
            )
        self.stem = ConvBN(in_channels, widths[0], 3)
        self.blocks = nn.Sequential(
            *(
                DepthwiseSeparable(cin, cout, stride)
                for cin, cout, stride in zip(widths[:-1], widths[1:], strides)
            )
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(widths[-1], num_classes)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(inputs))
        x = x.mean(dim=(2, 3))
        return self.head(self.dropout(x))


@MODELS.register_module()
class TinyViT(_Classifier):
    """A small vision transformer: patch embedding, class token, pre-norm encoder layers.

    Args:
        num_classes: outputs of the head.
        image_size: input height and width.
        patch_size: side of the square patches.
        in_channels: image channels.
        dim: token width.
        depth: number of encoder layers.
        heads: attention heads per layer.
        mlp_ratio: hidden width of the MLP relative to ``dim``.
        dropout: dropout inside the encoder layers.
        conv_stem: embed patches with stride-2 3x3 convs (conv + BN + ReLU, the last one a
            plain conv) instead of one ``patch_size`` x ``patch_size`` conv; transformers
            train much faster on small data with it (Xiao et al., 2021).
        label_smoothing: of the cross-entropy loss.
        data_preprocessor: default ``ClsDataPreprocessor`` without normalisation.

    Parameter names: ``patch_embed.*``, ``cls_token``, ``pos_embed``, ``layers.<i>.*``
    (LayerNorms ``norm1``/``norm2`` inside), ``norm.*``, ``head.*``.
    """

    def __init__(
        self,
        num_classes: int = 8,
        image_size: int = 32,
        patch_size: int = 4,
        in_channels: int = 3,
        dim: int = 64,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        dropout: float = 0.0,
        conv_stem: bool = True,
        label_smoothing: float = 0.0,
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | list | None = None,
    ) -> None:
        super().__init__(label_smoothing, data_preprocessor, init_cfg)
        if image_size % patch_size:
            raise ValueError(
                f"image_size {image_size} is not a multiple of patch_size {patch_size}"
            )
        tokens = (image_size // patch_size) ** 2
        if conv_stem:
            if patch_size not in (2, 4, 8):
                raise ValueError(f"conv_stem needs patch_size 2, 4 or 8, got {patch_size}")
            layers: list[nn.Module] = []
            width, size = in_channels, patch_size
            while size > 1:  # stride-2 3x3 convs until one token per patch
                out = dim if size == 2 else max(dim // 2, 16)
                layers.append(
                    ConvBN(width, out, 3, 2) if size > 2 else nn.Conv2d(width, out, 3, 2, 1)
                )
                width, size = out, size // 2
            self.patch_embed: nn.Module = nn.Sequential(*layers)
        else:
            self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + 1, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim,
                heads,
                int(dim * mlp_ratio),
                dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(inputs).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, 0]))
