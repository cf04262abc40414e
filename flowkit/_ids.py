"""Run ids: short, random, safe in Redis keys and URLs.

Lookups check an id's shape here, in one place, before it becomes part of a key: an id with a
``:`` could name another kind of key (``<id>:tasks`` is a flow run's sorted set, not a hash),
so it must read as "not found", never reach Redis as a type error.
"""

from __future__ import annotations

import re
import secrets

#: Longest run id a lookup accepts (flowkit's own are 16 characters).
MAX_RUN_ID_LENGTH = 128
#: Letters, digits, ``-``, ``_`` and ``.``: no key separator (``:``), no glob (``*``).
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*")


def new_id() -> str:
    """A new run id: 16 hex characters, random."""
    return secrets.token_hex(8)


def new_ids(count: int) -> list[str]:
    """``count`` new run ids at once: one read of the random source for a whole map."""
    if count == 1:
        return [new_id()]
    text = secrets.token_hex(8 * count)
    return [text[i:i + 16] for i in range(0, 16 * count, 16)]


def is_run_id(text: object) -> bool:
    """Whether ``text`` has the shape of a run id, so a lookup may build a key from it."""
    return (isinstance(text, str) and 0 < len(text) <= MAX_RUN_ID_LENGTH
            and _RUN_ID.fullmatch(text) is not None)


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a "not found" message, cut short when it is long (an id pasted
    from elsewhere can be kilobytes)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"
