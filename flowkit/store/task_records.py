"""Reading a task run's record: its fields, and the history it keeps inside it.

The record is one hash (``keys.task_run``) kept lean on purpose: a finished task run is what
a big map leaves behind in Redis, so it holds no field another one implies. Its history is
in the same hash, fields ``h1``..``h<hn>``, each a JSON array ``[state, ts, attempt,
worker, error_type, message, retry_in]`` with trailing items left out (base.lua's
``history_entry``): no list key per run and no command of its own per transition. The
entry that ends an attempt names its worker only when it is not the attempt's own (the one
in its 'running' entry); :func:`history` fills it in.
"""

from __future__ import annotations

import json
import re
from typing import Any

_HISTORY_FIELD = re.compile(r"h\d+")
#: Internal bookkeeping fields (and a small sealed result, bytes), left out of what readers see.
_INTERNAL = frozenset({"hn", "big", "result"})
#: History entry items, by position.
_ENTRY_NAMES = ("state", "ts", "attempt", "worker", "error_type", "message", "retry_in")
#: States whose entry ends an attempt (and so inherits the attempt's worker).
_ATTEMPT_ENDS = frozenset({"completed", "failed", "timed_out", "crashed", "cancelled",
                           "retrying"})


def fields(task_run_id: str, raw: dict[str, str]) -> dict[str, str]:
    """A record's fields as readers know them: without the history and bookkeeping, with
    ``id`` and the derived ``updated`` (its latest time) and ``duration``."""
    out = {k: v for k, v in raw.items()
           if k not in _INTERNAL and not _HISTORY_FIELD.fullmatch(k)}
    out.setdefault("id", task_run_id)
    out.setdefault("attempt", "0")
    times = [float(out[k]) for k in ("created", "started", "ended") if out.get(k)]
    if times and "updated" not in out:
        out["updated"] = f"{max(times):.6f}"
    if out.get("started") and out.get("ended") and "duration" not in out:
        out["duration"] = repr(max(0.0, float(out["ended"]) - float(out["started"])))
    return out


def history(raw: dict[str, str]) -> list[dict[str, Any]]:
    """The state transitions a record holds, oldest first, as named fields (``state``,
    ``ts``, ``attempt`` and, where they apply, ``worker``, ``error_type``, ``message``,
    ``retry_in``)."""
    count = int(raw.get("hn") or 0)
    entries: list[dict[str, Any]] = []
    holders: dict[int, str] = {}  # attempt -> the worker of its 'running' entry
    for n in range(1, count + 1):
        value = raw.get(f"h{n}")
        if value is None:
            continue
        entry = {name: item for name, item in zip(_ENTRY_NAMES, json.loads(value), strict=False)
                 if item != "" or name == "message"}
        if entry.get("message") == "" and "error_type" not in entry:
            entry.pop("message")
        if entry["state"] == "running" and entry.get("worker"):
            holders[entry["attempt"]] = entry["worker"]
        elif entry["state"] in _ATTEMPT_ENDS and not entry.get("worker"):
            if entry["attempt"] in holders:
                entry["worker"] = holders[entry["attempt"]]
        entries.append(entry)
    return entries
