"""Where logged scalars and the config go: JSON lines on disk, TensorBoard event files.

Backends create their files on the first write, so a runner that never logs leaves no empty
files behind. ``LocalVisBackend`` writes one JSON object per logged step (MMEngine's
``scalars.json`` format: the scalars plus ``step``); ``TensorboardVisBackend`` writes
event files with ``torch.utils.tensorboard`` (install ``tensorboard`` to use it).
"""

from __future__ import annotations

import json
import math
import numbers
import os
from typing import Any

import numpy as np
import torch

from fastopt.registry import VISBACKENDS


def _plain_scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    return value


class BaseVisBackend:
    """A destination for scalars and configs; ``save_dir`` is where its files go."""

    def __init__(self, save_dir: str | None) -> None:
        self._save_dir = save_dir

    @property
    def save_dir(self) -> str | None:
        return self._save_dir

    @property
    def experiment(self) -> Any:
        """The backend's underlying writer (None until something was written)."""
        return None

    def add_config(self, config: Any, **kwargs: Any) -> None:
        """Record the run's config."""

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        """Record one scalar at ``step``."""

    def add_scalars(
        self,
        scalar_dict: dict[str, Any],
        step: int = 0,
        file_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Record several scalars at ``step``."""

    def close(self) -> None:
        """Flush and close files."""


@VISBACKENDS.register_module()
class LocalVisBackend(BaseVisBackend):
    """JSON-lines scalars and the config dump in ``save_dir`` (MMEngine's file names).

    Args:
        save_dir: directory of the files (the runner passes ``<log_dir>/vis_data``).
        img_save_dir: accepted for config compatibility (images are not recorded).
        config_save_file: file name of the config dump.
        scalar_save_file: file name of the scalars, one JSON object per line.
    """

    def __init__(
        self,
        save_dir: str,
        img_save_dir: str = "vis_image",
        config_save_file: str = "config.py",
        scalar_save_file: str = "scalars.json",
    ) -> None:
        if save_dir is None:
            raise ValueError("LocalVisBackend needs a save_dir")
        super().__init__(save_dir)
        if not scalar_save_file.endswith(".json"):
            raise ValueError(f"scalar_save_file must be a .json file, got {scalar_save_file!r}")
        self._img_save_dir = img_save_dir
        self._config_save_file = os.path.join(save_dir, config_save_file)
        self._scalar_save_file = os.path.join(save_dir, scalar_save_file)

    @property
    def experiment(self) -> LocalVisBackend:
        return self

    def add_config(self, config: Any, **kwargs: Any) -> None:
        os.makedirs(self._save_dir, exist_ok=True)  # type: ignore[arg-type]
        if hasattr(config, "dump"):
            config.dump(self._config_save_file)
        else:
            with open(self._config_save_file, "w", encoding="utf-8") as f:
                f.write(repr(config))

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        self._dump({name: _plain_scalar(value), "step": step}, self._scalar_save_file)

    def add_scalars(
        self,
        scalar_dict: dict[str, Any],
        step: int = 0,
        file_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Append ``{**scalar_dict, 'step': step}``; also to ``file_path`` if given.

        ``file_path`` (relative to ``save_dir``, a ``.json`` name such as
        ``<timestamp>.json``) is how the logger hook keeps a per-run copy.
        """
        if not isinstance(scalar_dict, dict):
            raise TypeError(f"scalar_dict must be a dict, but got {type(scalar_dict).__name__}")
        record = {k: _plain_scalar(v) for k, v in scalar_dict.items()}
        record.setdefault("step", step)
        if file_path is not None:
            if not file_path.endswith(".json"):
                raise ValueError(f"file_path must be a .json file, got {file_path!r}")
            path = os.path.join(self._save_dir, file_path)  # type: ignore[arg-type]
            if path == self._scalar_save_file:
                raise ValueError(f"file_path must differ from scalar_save_file ({path})")
            self._dump(record, path)
        self._dump(record, self._scalar_save_file)

    def _dump(self, record: dict[str, Any], path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, torch.Tensor)):
        return value.tolist()
    return str(value)


@VISBACKENDS.register_module()
class TensorboardVisBackend(BaseVisBackend):
    """TensorBoard event files in ``save_dir`` (needs the ``tensorboard`` package).

    Non-finite and non-numeric values are skipped (TensorBoard cannot plot them).
    """

    def __init__(self, save_dir: str) -> None:
        if save_dir is None:
            raise ValueError("TensorboardVisBackend needs a save_dir")
        super().__init__(save_dir)
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "TensorboardVisBackend needs the tensorboard package: pip install tensorboard"
            ) from e
        self._writer: Any = None

    @property
    def experiment(self) -> Any:
        return self._get_writer()

    def _get_writer(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            os.makedirs(self._save_dir, exist_ok=True)  # type: ignore[arg-type]
            self._writer = SummaryWriter(self._save_dir)
        return self._writer

    def add_config(self, config: Any, **kwargs: Any) -> None:
        text = getattr(config, "pretty_text", None) or repr(config)
        self._get_writer().add_text("config", f"```\n{text}\n```")

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        value = _plain_scalar(value)
        if isinstance(value, numbers.Real) and math.isfinite(value):
            self._get_writer().add_scalar(name, value, step)

    def add_scalars(
        self,
        scalar_dict: dict[str, Any],
        step: int = 0,
        file_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        for key, value in scalar_dict.items():
            self.add_scalar(key, value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
