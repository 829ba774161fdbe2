"""Collate functions (registered in ``FUNCTIONS`` under MMEngine's names).

``pseudo_collate`` is the runner's default, as in MMEngine: it transposes a list of samples
into one batch structure but leaves the per-sample tensors unstacked, so a data preprocessor
can pad images of different sizes. ``default_collate`` stacks like torch's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch.utils.data import default_collate as torch_default_collate

from fastopt.registry import FUNCTIONS


@FUNCTIONS.register_module()
def pseudo_collate(data_batch: Sequence) -> Any:
    """Transpose a list of samples: dicts of lists, tuples of lists, lists of leaves.

    Leaves (tensors, arrays, numbers, strings, objects) are kept as they are in a list.
    """
    if not isinstance(data_batch, Sequence) or isinstance(data_batch, str):
        raise TypeError(f"pseudo_collate expects a list of samples, got {type(data_batch)}")
    if len(data_batch) == 0:
        return []
    first = data_batch[0]
    if isinstance(first, Mapping):
        collated = {key: pseudo_collate([d[key] for d in data_batch]) for key in first}
        try:
            return type(first)(collated)  # keeps OrderedDict and other dict types
        except TypeError:
            return collated
    if isinstance(first, tuple) and hasattr(first, "_fields"):  # namedtuple
        return type(first)(*(pseudo_collate(samples) for samples in zip(*data_batch)))
    if isinstance(first, Sequence) and not isinstance(first, (str, bytes)):
        lengths = {len(d) for d in data_batch}
        if len(lengths) != 1:
            raise RuntimeError("each sample in a batch must have the same number of fields")
        transposed = [pseudo_collate(list(samples)) for samples in zip(*data_batch)]
        return tuple(transposed) if isinstance(first, tuple) else transposed
    return list(data_batch)


@FUNCTIONS.register_module()
def default_collate(data_batch: Sequence) -> Any:
    """Stack tensors/arrays/numbers into batch tensors (torch's ``default_collate``).

    numpy arrays become tensors; strings and other objects stay lists.
    """
    return torch_default_collate(list(data_batch))
