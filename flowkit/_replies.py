"""Reading the outcomes in a 'done' message of a driver's reply stream.

One message carries the outcomes of every task run of this driver that one library call
ended (base.lua's ``reply_done``): ``n``, then for i = 1..n ``id:i``, ``state:i`` and the
optional ``result:i``, ``error_type:i``, ``error_message:i``, ``traceback:i`` and
``exception:i`` (the sealed pickle, kept as bytes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flowkit.states import RunState

_ERROR_FIELDS = (b"error_type", b"error_message", b"traceback", b"exception")


def outcomes(fields: dict[bytes, bytes]
             ) -> Iterator[tuple[str, RunState, bytes | None, dict[str, Any]]]:
    """``(task run id, state, sealed result or None, error fields)`` per outcome."""
    for i in range(1, int(fields[b"n"]) + 1):
        suffix = b":%d" % i
        error: dict[str, Any] = {}
        for name in _ERROR_FIELDS:
            value = fields.get(name + suffix)
            if value is not None:
                error[name.decode()] = value if name == b"exception" else value.decode(
                    "utf-8", "replace")
        yield (fields[b"id" + suffix].decode(), RunState(fields[b"state" + suffix].decode()),
               fields.get(b"result" + suffix), error)
