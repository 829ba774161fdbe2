"""Vis backends (JSON scalars, TensorBoard) and the ``Visualizer`` that drives them."""

from .vis_backend import BaseVisBackend, LocalVisBackend, TensorboardVisBackend
from .visualizer import Visualizer

__all__ = ["BaseVisBackend", "LocalVisBackend", "TensorboardVisBackend", "Visualizer"]
