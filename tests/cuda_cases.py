"""Tables shared by the CUDA engine's tests on a GPU (test_cuda.py) and under the host emulation
(test_cuda_engine_emulated.py). A plain module that imports no compiled engine: a CUDA build
without the emulation (FASTOPT_SIMT=OFF) still collects and runs ``pytest -m cuda``."""

from __future__ import annotations

CHUNK = 1 << 16  # the CUDA engine's default chunk (catalog()['cuda_chunk_elems'])
# empty, one element, a 2-d, one chunk and a bit, a 3-d, an odd size
SHAPES = [(0,), (1,), (7, 3), (CHUNK + 123,), (33, 5, 2), (4099,)]
