"""``SyntheticShapes``: a small image-classification dataset rendered on the fly, no download.

Each image shows one shape -- disk, ring, square, frame, triangle, plus, cross or two bars --
at a random position, size and tilt (up to ±20°), in a random colour on a random background
with a soft brightness gradient and pixel noise. Everything is drawn from
``numpy.random.SeedSequence([seed, split])``, so a (seed, split, size) triple always gives the
same images, on any machine, and the splits never share a random stream.

Samples follow MMEngine's convention, ``dict(inputs=uint8 tensor [3, H, W], data_samples=label)``;
a :class:`~fastopt.model.zoo.ClsDataPreprocessor` stacks and normalises a batch of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fastopt.registry import DATASETS

CLASSES: tuple[str, ...] = (
    "disk",
    "ring",
    "square",
    "frame",
    "triangle",
    "plus",
    "cross",
    "bars",
)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}
DEFAULT_SIZES: dict[str, int] = {"train": 4000, "val": 1000, "test": 1000}
MAX_TILT = np.deg2rad(20.0)


def _signed_distance(name: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Approximate signed distance (in shape radii) to the outline of ``name``; < 0 inside.

    ``u``, ``v`` are coordinates relative to the centre, divided by the radius and rotated
    by the tilt; every shape fits in the unit disk.
    """
    if name == "disk":
        return np.hypot(u, v) - 1.0
    if name == "ring":
        return np.abs(np.hypot(u, v) - 0.72) - 0.28
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) - 0.78
    if name == "frame":
        return np.abs(np.maximum(np.abs(u), np.abs(v)) - 0.6) - 0.2
    if name == "triangle":  # equilateral, apex up, circumradius 1
        edges = [(np.cos(a), np.sin(a)) for a in np.deg2rad([90.0, 210.0, 330.0])]
        return np.max([nx * u + ny * v for nx, ny in edges], axis=0) - 0.5
    if name in ("plus", "cross"):
        if name == "cross":
            u, v = (u - v) / np.sqrt(2.0), (u + v) / np.sqrt(2.0)
        bar_h = np.maximum(np.abs(u) - 1.0, np.abs(v) - 0.26)
        bar_v = np.maximum(np.abs(v) - 1.0, np.abs(u) - 0.26)
        return np.minimum(bar_h, bar_v)
    if name == "bars":  # two parallel vertical bars
        return np.maximum(np.abs(np.abs(u) - 0.55) - 0.22, np.abs(v) - 0.95)
    raise ValueError(f"unknown shape {name!r}")


def render_shapes(
    labels: np.ndarray,
    rng: np.random.Generator,
    image_size: int = 32,
    noise: float = 0.12,
    classes: Sequence[str] = CLASSES,
) -> np.ndarray:
    """Draw one image per label: uint8 array ``[N, 3, image_size, image_size]``."""
    n, s = len(labels), image_size
    radius = rng.uniform(0.2, 0.4, n) * s
    cx = rng.uniform(0.0, 1.0, n) * (s - 2 * radius - 2) + radius + 1
    cy = rng.uniform(0.0, 1.0, n) * (s - 2 * radius - 2) + radius + 1
    tilt = rng.uniform(-MAX_TILT, MAX_TILT, n)
    background = rng.uniform(0.0, 1.0, (n, 3))
    # the foreground differs from the background by 0.2-0.6 in every channel
    delta = rng.uniform(0.2, 0.6, (n, 3))
    foreground = np.where(background > 0.5, background - delta, background + delta)
    gradient = rng.normal(0.0, 0.12, (n, 2))
    pixel_noise = rng.normal(0.0, noise, (n, 3, s, s))

    ys, xs = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    dx = (xs[None] - cx[:, None, None]) / radius[:, None, None]
    dy = (ys[None] - cy[:, None, None]) / radius[:, None, None]
    cos, sin = np.cos(tilt)[:, None, None], np.sin(tilt)[:, None, None]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    distance = np.empty((n, s, s))
    for k, name in enumerate(classes):
        rows = labels == k
        if rows.any():
            distance[rows] = _signed_distance(name, u[rows], -v[rows])  # image y points down
    # one pixel of anti-aliasing at the outline
    alpha = np.clip(0.5 - distance * radius[:, None, None], 0.0, 1.0)[:, None]
    ramp = (
        gradient[:, 0, None, None] * (xs[None] / s - 0.5)
        + gradient[:, 1, None, None] * (ys[None] / s - 0.5)
    )[:, None]
    image = (
        alpha * foreground[:, :, None, None]
        + (1.0 - alpha) * (background[:, :, None, None] + ramp)
        + pixel_noise
    )
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


@DATASETS.register_module()
class SyntheticShapes(Dataset):
    """Images of eight kinds of shapes, generated deterministically from ``seed`` (no files).

    Args:
        split: ``'train'``, ``'val'`` or ``'test'``; each split has its own random stream.
        num_samples: number of images (default 4000 for train, 1000 for val and test).
            Labels are balanced: every class gets ``num_samples // num_classes`` images or one
            more.
        image_size: height and width in pixels (at least 16).
        seed: the seed; the same seed and split always give the same images.
        noise: standard deviation of the per-pixel Gaussian noise (images are in [0, 1]
            before they are stored as uint8).
        num_classes: use the first ``num_classes`` shapes of :data:`CLASSES` (2 to 8).

    ``dataset[i]`` is ``dict(inputs=uint8 tensor [3, H, W], data_samples=int label)``;
    ``metainfo['classes']`` names the labels.
    """

    def __init__(
        self,
        split: str = "train",
        num_samples: int | None = None,
        image_size: int = 32,
        seed: int = 0,
        noise: float = 0.12,
        num_classes: int = len(CLASSES),
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {sorted(SPLITS)}, but got {split!r}")
        if num_samples is None:
            num_samples = DEFAULT_SIZES[split]
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, but got {num_samples!r}")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
            raise ValueError(f"image_size must be an int >= 16, but got {image_size!r}")
        if not 2 <= num_classes <= len(CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(CLASSES)}], but got {num_classes}")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, but got {noise}")
        self.split = split
        self.image_size = image_size
        self.seed = int(seed)
        self.noise = float(noise)
        self.classes = CLASSES[:num_classes]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS[split]]))
        labels = rng.permutation(np.arange(num_samples) % num_classes)
        images = np.empty((num_samples, 3, image_size, image_size), dtype=np.uint8)
        chunk = 1024  # bounds the float64 working set
        for start in range(0, num_samples, chunk):
            stop = min(start + chunk, num_samples)
            images[start:stop] = render_shapes(
                labels[start:stop], rng, image_size, self.noise, self.classes
            )
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels.astype(np.int64))

    @property
    def metainfo(self) -> dict[str, Any]:
        """``classes`` and the generation settings (stored in checkpoints)."""
        return dict(
            classes=self.classes,
            split=self.split,
            image_size=self.image_size,
            seed=self.seed,
            noise=self.noise,
        )

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return dict(inputs=self.images[index], data_samples=int(self.labels[index]))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(split={self.split!r}, num_samples={len(self)}, "
            f"image_size={self.image_size}, num_classes={len(self.classes)}, seed={self.seed})"
        )
