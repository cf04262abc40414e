"""How big a task call may be at submit (FLOWKIT_MAX_ARGUMENT_BYTES), and how to tell cheaply:
most calls are made of plain values whose pickled size has a bound without pickling them."""

from __future__ import annotations

from typing import Any

from flowkit._units import human_bytes

#: Types whose values always pickle: a call made only of these needs no trial pickling.
_ALWAYS_PICKLABLE = frozenset({bytes, str, int, float, bool, type(None)})


def plain_size_bound(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound of the pickled size of a call made only of plain values (a str takes
    at most 4 bytes a character in UTF-8), so that small ones need no trial pickling."""
    values = [*args, *kwargs.values()]
    return 4096 + sum(4 * len(v) if isinstance(v, str) else len(v) if isinstance(v, bytes)
                      else 16 for v in values) + sum(len(k) for k in kwargs)


def too_large(task_name: str, index: int, count: int, size: int, limit: int,
              queued_before: bool = False) -> str:
    """The refusal's message (``queued_before``: a late chunk of a map that was queued in
    part, and that part is cancelled)."""
    which = f"call {index + 1} of {count}" if count > 1 else "its call"
    outcome = ("the calls before it are cancelled" if queued_before else "nothing was queued")
    return (f"task {task_name!r}: {which} pickles to {human_bytes(size)} ({size} bytes), "
            f"over FLOWKIT_MAX_ARGUMENT_BYTES={limit}; pass a path or URL to the data "
            f"instead (or raise the limit); {outcome}")


def always_picklable(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    return (all(type(a) in _ALWAYS_PICKLABLE for a in args)
            and all(type(v) in _ALWAYS_PICKLABLE for v in kwargs.values()))
