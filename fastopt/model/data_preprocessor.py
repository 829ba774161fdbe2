"""Data preprocessors: turn a batch from the loader into the model's inputs.

* :class:`BaseDataPreprocessor` moves a batch to the model's device;
* :class:`ImgDataPreprocessor` (MMEngine's) also stacks images into one padded batch
  tensor, converts BGR/RGB and normalises.

Applied inside ``train_step``/``val_step``/``test_step`` of :class:`~fastopt.model.BaseModel`.
The device follows the model: ``model.to('cuda')`` (or any ``.cuda()``/``.half()``...) updates
it, so the batch always lands where the parameters are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastopt.registry import MODELS


def cast_data(data: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """``data`` with every tensor (and tensor-like ``.to`` object) moved to ``device``.

    Dicts, lists, tuples and namedtuples are rebuilt with the same type; strings and other
    leaves are returned as they are.
    """
    if isinstance(data, Mapping):
        moved = {key: cast_data(value, device, non_blocking) for key, value in data.items()}
        try:
            return type(data)(moved)
        except TypeError:
            return moved
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(cast_data(v, device, non_blocking) for v in data))
    if isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        items = [cast_data(v, device, non_blocking) for v in data]
        return tuple(items) if isinstance(data, tuple) else items
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if hasattr(data, "to") and callable(data.to) and not isinstance(data, nn.Module):
        # data samples of downstream libraries (e.g. BaseDataElement) implement .to(device)
        return data.to(device)
    return data


@MODELS.register_module()
class BaseDataPreprocessor(nn.Module):
    """Moves every tensor of a batch to the model's device; does nothing else.

    Args:
        non_blocking: pass ``non_blocking=True`` to ``Tensor.to`` (pinned-memory loaders).
    """

    def __init__(self, non_blocking: bool = False) -> None:
        super().__init__()
        self._non_blocking = non_blocking
        self._device = torch.device("cpu")

    @property
    def device(self) -> torch.device:
        """Where batches are moved to."""
        return self._device

    def set_device(self, device: torch.device | str) -> None:
        """Set :attr:`device` (the owning model calls this when it moves)."""
        self._device = torch.device(device)

    def cast_data(self, data: Any) -> Any:
        """``data`` moved to :attr:`device`."""
        return cast_data(data, self._device, self._non_blocking)

    def forward(self, data: Any, training: bool = False) -> Any:
        """Preprocess a batch (here: move it); ``training`` tells train from val/test."""
        return self.cast_data(data)


def stack_batch(
    tensor_list: list[torch.Tensor], pad_size_divisor: int = 1, pad_value: float = 0
) -> torch.Tensor:
    """Stack tensors of the same rank into one batch, padding each one at the end of every
    dimension but the first (the channels) to the largest size of the batch, rounded up to
    a multiple of ``pad_size_divisor`` (MMEngine's ``stack_batch``)."""
    if not isinstance(tensor_list, list) or not tensor_list:
        raise TypeError(f"stack_batch expects a non-empty list of tensors, got {tensor_list!r}")
    ranks = {t.dim() for t in tensor_list}
    if len(ranks) != 1:
        raise ValueError(
            "stack_batch: all tensors must have the same number of dimensions, got "
            f"{[t.dim() for t in tensor_list]}"
        )
    sizes = [list(t.shape) for t in tensor_list]
    dims = len(sizes[0])
    target = [
        max(size[d] for size in sizes)
        if d == 0
        else math.ceil(max(size[d] for size in sizes) / pad_size_divisor) * pad_size_divisor
        for d in range(dims)
    ]
    padded = []
    for tensor, size in zip(tensor_list, sizes):
        if size[0] != target[0]:
            raise ValueError(
                f"stack_batch: the first (channel) dimension differs within the batch: {sizes}"
            )
        # F.pad takes (left, right) pairs from the last dimension backwards
        pad: list[int] = []
        for d in range(dims - 1, 0, -1):
            pad += [0, target[d] - size[d]]
        padded.append(F.pad(tensor, pad, value=pad_value) if any(pad) else tensor)
    return torch.stack(padded)


@MODELS.register_module()
class ImgDataPreprocessor(BaseDataPreprocessor):
    """Images to one normalised, padded float batch (MMEngine's ``ImgDataPreprocessor``).

    Args:
        mean, std: per-channel mean and standard deviation (1 or 3 values, in the units of
            the stored images); both None: no normalisation.
        pad_size_divisor: pad height and width up to a multiple of this.
        pad_value: value of the padded pixels.
        bgr_to_rgb, rgb_to_bgr: reverse the channel order (not both).
        non_blocking: see :class:`BaseDataPreprocessor`.

    Input: ``dict(inputs=[C, H, W] tensors or an [N, C, H, W] tensor, data_samples=...)``;
    output: the same dict with ``inputs`` an [N, C, H', W'] float tensor on the model's
    device (``data_samples`` moved, or None).
    """

    def __init__(
        self,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        pad_size_divisor: int = 1,
        pad_value: float = 0,
        bgr_to_rgb: bool = False,
        rgb_to_bgr: bool = False,
        non_blocking: bool = False,
    ) -> None:
        super().__init__(non_blocking)
        if bgr_to_rgb and rgb_to_bgr:
            raise ValueError("`bgr2rgb` and `rgb2bgr` cannot be set to True at the same time")
        if (mean is None) != (std is None):
            raise ValueError("mean and std should be both None or both sequences")
        self._enable_normalize = mean is not None
        if mean is not None and std is not None:
            for name, values in (("mean", mean), ("std", std)):
                if len(values) not in (1, 3):
                    raise ValueError(
                        f"`{name}` should have 1 or 3 values, to be compatible with RGB or gray "
                        f"image, but got {len(values)} values"
                    )
            self.register_buffer("mean", torch.tensor(mean).view(-1, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(std).view(-1, 1, 1), persistent=False)
        if not isinstance(pad_size_divisor, int) or pad_size_divisor < 1:
            raise ValueError(f"pad_size_divisor must be a positive int, got {pad_size_divisor!r}")
        self._channel_conversion = bgr_to_rgb or rgb_to_bgr
        self.pad_size_divisor = pad_size_divisor
        self.pad_value = pad_value

    def _convert(self, images: torch.Tensor, channel_dim: int) -> torch.Tensor:
        if self._channel_conversion:
            images = images.flip(channel_dim)
        images = images.float()
        if self._enable_normalize:
            images = (images - self.mean) / self.std
        return images

    def forward(self, data: Any, training: bool = False) -> Any:
        """Preprocess one batch (see the class docstring)."""
        if not isinstance(data, Mapping) or "inputs" not in data:
            raise TypeError(
                "ImgDataPreprocessor expects a dict batch with 'inputs' (and 'data_samples'), "
                f"got {type(data).__name__}"
            )
        data = dict(self.cast_data(data))
        inputs = data["inputs"]
        if isinstance(inputs, torch.Tensor):
            if inputs.dim() != 4:
                raise ValueError(
                    "The input of `ImgDataPreprocessor` should be a NCHW tensor or a list of "
                    f"tensor, but got a tensor with shape: {tuple(inputs.shape)}"
                )
            images = self._convert(inputs, 1)
            h, w = images.shape[2:]
            d = self.pad_size_divisor
            pad_h, pad_w = math.ceil(h / d) * d - h, math.ceil(w / d) * d - w
            batch = F.pad(images, (0, pad_w, 0, pad_h), "constant", self.pad_value)
        elif (
            isinstance(inputs, Sequence)
            and inputs
            and all(isinstance(t, torch.Tensor) for t in inputs)
        ):
            images_list = []
            for image in inputs:
                if (
                    self._enable_normalize
                    and self.mean.shape[0] == 3
                    and (image.dim() != 3 or image.shape[0] != 3)
                ):
                    raise ValueError(
                        "If the mean has 3 values, the input tensor should in shape of "
                        f"(3, H, W), but got the tensor with shape {tuple(image.shape)}"
                    )
                images_list.append(self._convert(image, 0))
            batch = stack_batch(images_list, self.pad_size_divisor, self.pad_value)
        else:
            raise TypeError(
                "ImgDataPreprocessor: 'inputs' should be an [N, C, H, W] tensor or a list of "
                f"[C, H, W] tensors, but got {type(inputs).__name__}"
            )
        data["inputs"] = batch
        data.setdefault("data_samples", None)
        return data
