"""Helpers shared by the benchmark suites (device parameters, a one-entry tensor cache)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from fastopt.benchmark.param_sets import Params, make_params


def cuda_param(*values: Any) -> Any:
    """A parameter set on CUDA: marked ``cuda`` and skipped without a GPU."""
    return pytest.param(
        *values,
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
        ],
    )


def device_params(*values: Any) -> list[Any]:
    """``values`` + ``('cpu',)`` and ``values`` + ``('cuda',)`` (the latter marked)."""
    return [pytest.param(*values, "cpu"), cuda_param(*values, "cuda")]


def fastopt_has(device: str) -> bool:
    """Whether fastopt's engine was built for ``device``'s type."""
    from fastopt._ext import build_info

    return torch.device(device).type in build_info().get("backends", [])


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class ParamCache:
    """Keeps the tensors of the last (set, dtype, device) only: GPT-2 is 0.5 GB in fp32."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._key: tuple[str, str, str] | None = None
        self._params: Params | None = None

    def get(self, set_name: str, dtype: str, device: str) -> Params:
        key = (set_name, dtype, device)
        if key != self._key or self._params is None:
            self._params = None  # free the old set first
            self._params = make_params(set_name, dtype, device, self.scale)
            self._key = key
        return self._params
