"""``Visualizer``: fans scalars and the config out to the configured vis backends.

The runner builds one per run (``Visualizer.get_instance(experiment_name, ...)``), so hooks
and models can fetch it with ``Visualizer.get_current_instance()`` as in MMEngine. Only rank 0
has backends: other ranks accept every call and write nothing.
"""

from __future__ import annotations

from typing import Any

from fastopt.dist import is_main_process
from fastopt.logging import ManagerMixin
from fastopt.registry import VISBACKENDS, VISUALIZERS

from .vis_backend import BaseVisBackend


@VISUALIZERS.register_module()
class Visualizer(ManagerMixin):
    """Scalar and config recording through ``vis_backends``.

    Args:
        name: instance name (the runner uses its experiment name).
        vis_backends: backend configs or objects, e.g. ``[dict(type='LocalVisBackend'),
            dict(type='TensorboardVisBackend')]``; their ``save_dir`` defaults to ``save_dir``.
        save_dir: default directory of the backends (the runner passes
            ``<log_dir>/vis_data``). Without it no backend is built.
    """

    def __init__(
        self,
        name: str = "visualizer",
        vis_backends: list[dict | BaseVisBackend] | dict | None = None,
        save_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name)
        if kwargs:
            # image-drawing options of MMEngine's Visualizer (image, fig_save_cfg, ...)
            unknown = ", ".join(sorted(kwargs))
            raise TypeError(
                f"Visualizer got unsupported arguments: {unknown} (fastopt records scalars and "
                "configs only)"
            )
        self._vis_backends: dict[str, BaseVisBackend] = {}
        if isinstance(vis_backends, dict):
            vis_backends = [vis_backends]
        if vis_backends and save_dir is not None and is_main_process():
            for item in vis_backends:
                backend = item
                if isinstance(item, dict):
                    cfg = dict(item)
                    cfg.setdefault("save_dir", save_dir)
                    name_key = cfg.pop("name", None)
                    backend = VISBACKENDS.build(cfg)
                    key = name_key or type(backend).__name__
                else:
                    key = type(item).__name__
                if not isinstance(backend, BaseVisBackend):
                    raise TypeError(
                        f"vis_backends entries must build BaseVisBackend objects, got "
                        f"{type(backend).__name__}"
                    )
                if key in self._vis_backends:
                    raise ValueError(f"vis backend {key!r} is configured twice; give one a name")
                self._vis_backends[key] = backend

    @property
    def backends(self) -> dict[str, BaseVisBackend]:
        """The backends by name (class name unless configured with ``name``)."""
        return self._vis_backends

    def get_backend(self, name: str) -> BaseVisBackend | None:
        """The backend called ``name`` (None if there is none)."""
        return self._vis_backends.get(name)

    def add_config(self, config: Any, **kwargs: Any) -> None:
        for backend in self._vis_backends.values():
            backend.add_config(config, **kwargs)

    def add_scalar(self, name: str, value: Any, step: int = 0, **kwargs: Any) -> None:
        for backend in self._vis_backends.values():
            backend.add_scalar(name, value, step, **kwargs)

    def add_scalars(
        self,
        scalar_dict: dict[str, Any],
        step: int = 0,
        file_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        for backend in self._vis_backends.values():
            backend.add_scalars(scalar_dict, step, file_path, **kwargs)

    def close(self) -> None:
        for backend in self._vis_backends.values():
            backend.close()
