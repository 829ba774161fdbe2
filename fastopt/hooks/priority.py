"""Hook priorities: the nine named levels of MMEngine, and any int in [0, 100].

A lower value runs earlier. Configs name priorities as strings in any case
(``priority='normal'``), as :class:`Priority` members or as ints.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Union


class Priority(IntEnum):
    """Named priority levels (MMEngine's values)."""

    HIGHEST = 0
    VERY_HIGH = 10
    HIGH = 30
    ABOVE_NORMAL = 40
    NORMAL = 50
    BELOW_NORMAL = 60
    LOW = 70
    VERY_LOW = 90
    LOWEST = 100


PriorityLike = Union[int, str, Priority]


def get_priority(priority: PriorityLike) -> int:
    """The int value of ``priority`` (a :class:`Priority`, a level name in any case, or an int).

    Raises:
        ValueError: an int outside [0, 100] or an unknown level name.
        TypeError: anything else.
    """
    if isinstance(priority, Priority):
        return priority.value
    if isinstance(priority, bool):
        raise TypeError(f"priority must be an int, a str or a Priority, but got {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 100:
            raise ValueError(f"priority must be between 0 and 100, but got {priority}")
        return priority
    if isinstance(priority, str):
        try:
            return Priority[priority.upper()].value
        except KeyError:
            names = ", ".join(p.name for p in Priority)
            raise ValueError(f"unknown priority {priority!r}; use one of {names}") from None
    raise TypeError(
        f"priority must be an int, a str or a Priority, but got {type(priority).__name__}"
    )


def priority_name(priority: PriorityLike) -> str:
    """How the hook-order printout shows a priority (MMEngine's rule).

    An int that is a level prints as its name (``50`` -> ``NORMAL``), another int as the
    number (``49``), a string exactly as it was given (``'normal'``).
    """
    if isinstance(priority, str):
        return priority
    try:
        return Priority(priority).name
    except ValueError:
        return str(priority)
