"""Reading a task run's record: its fields, and the history it keeps inside it.

The record is one hash (``keys.task_run``) kept lean on purpose: a finished task run is what
a big map leaves behind in Redis, so it holds no field another one implies (the layout is
documented at the top of ``library/transitions.lua``). Readers get the same names as ever:

- ``p``, ``n`` are ``parameters`` and ``task_name``; a record without ``n`` has its flow
  run's ``task_name`` (that of its first task runs: a map's).
- ``w`` names who holds the attempt: the ``executor`` id alone when it is
  ``<worker>.<digits>`` (the ``worker`` is implied), else the ``worker``, with the
  ``executor`` in ``x``.
- ``c`` is ``created`` in epoch microseconds, and every other time counts from it in
  microseconds: ``b`` (the attempt's start), ``b + e`` (its end: ``e`` is its length), and
  each history entry's ``ts``.
- The history is fields ``h1``..``h<hn>``, each a JSON array ``[state, ts, attempt, worker,
  error_type, message, retry_in]`` with trailing items left out (base.lua's
  ``history_entry``), followed by what ``b`` and ``e`` imply for the current attempt: its
  'running' entry, and the entry of its plain end (no error, no message, its own worker).
  The library writes those out as entries before it adds another. An entry that ends an
  attempt names its worker only when it is not the attempt's own; :func:`history` fills it in.

Records written before this layout (``created``, ``started`` and ``ended`` in epoch seconds,
``parameters``, ``task_name``, ``worker``, ``executor``, every entry written out with epoch
seconds) read
the same way: a ``ts`` with a fraction is epoch seconds, an integer one microseconds after
``c`` (0 when the record has none: the library finishing such a record writes epoch
microseconds).
"""

from __future__ import annotations

import json
import re
from typing import Any

_HISTORY_FIELD = re.compile(r"h\d+")
#: Internal bookkeeping fields (and a small sealed result, bytes), left out of what readers see.
_INTERNAL = frozenset({"hn", "big", "result", "c", "b", "e", "w", "x", "p", "n"})
#: Short field names and the names readers know them by.
_RENAMED = (("p", "parameters"), ("n", "task_name"))
#: History entry items, by position.
_ENTRY_NAMES = ("state", "ts", "attempt", "worker", "error_type", "message", "retry_in")
#: States whose entry ends an attempt (and so inherits the attempt's worker).
_ATTEMPT_ENDS = frozenset({"completed", "failed", "timed_out", "crashed", "cancelled",
                           "retrying"})
#: States a task run ends in (its end time is its last entry's).
_TERMINAL = frozenset({"completed", "cached", "failed", "timed_out", "crashed", "cancelled"})
_DIGITS = re.compile(r"\d+")


def keeps_history_inside(raw: dict[str, str]) -> bool:
    """Whether a record holds its history (entries ``h<n>``, or implied by ``b`` and ``e``
    with ``c``); records written before issue 9 kept it in a list of their own
    (``keys.legacy_task_run_history``)."""
    return not {"hn", "c", "b"}.isdisjoint(raw)


def time_text(us: int) -> str:
    """Epoch microseconds as the record's readers know times: seconds with 6 decimals."""
    return f"{us // 1_000_000}.{us % 1_000_000:06d}"


def _seconds_us(value: str) -> int:
    """Epoch seconds (a field of a record written before the compact layout) in microseconds."""
    return round(float(value) * 1_000_000)


def holder_of(raw: dict[str, str]) -> tuple[str | None, str | None]:
    """The worker and executor a record names (``w`` and ``x``, or ``worker`` and
    ``executor`` before the compact layout)."""
    w = raw.get("w")
    if w is None:
        return raw.get("worker"), raw.get("executor")
    if "x" in raw:
        return w, raw["x"]
    worker, dot, suffix = w.rpartition(".")
    return (worker if dot and _DIGITS.fullmatch(suffix) else w), w


def _entries_us(raw: dict[str, str]) -> list[dict[str, Any]]:
    """Every history entry, written out and implied, oldest first, with ``ts`` in epoch
    microseconds (and the ending entries' worker not filled in yet)."""
    base = int(raw.get("c") or 0)
    entries: list[dict[str, Any]] = []
    for n in range(1, int(raw.get("hn") or 0) + 1):
        value = raw.get(f"h{n}")
        if value is None:
            continue
        entry = {name: item for name, item in zip(_ENTRY_NAMES, json.loads(value), strict=False)
                 if item != "" or name == "message"}
        if entry.get("message") == "" and "error_type" not in entry:
            entry.pop("message")
        ts = entry["ts"]
        entry["ts"] = base + ts if isinstance(ts, int) else round(ts * 1_000_000)
        entries.append(entry)
    if "b" in raw:
        attempt, start = int(raw.get("attempt") or 0), base + int(raw["b"])
        implied: list[dict[str, Any]] = [{"state": "running", "ts": start, "attempt": attempt}]
        worker = holder_of(raw)[0]
        if worker:
            implied[0]["worker"] = worker
        if "e" in raw:
            implied.append({"state": raw.get("state", ""), "ts": start + int(raw["e"]),
                            "attempt": attempt})
        # After the entries written out, except one that a library of before this layout
        # added later (its end of an attempt claimed here): keep time order.
        at = len(entries)
        while at > 0 and entries[at - 1]["ts"] > start:
            at -= 1
        entries[at:at] = implied
    return entries


def _times_us(raw: dict[str, str], entries: list[dict[str, Any]]) -> dict[str, int]:
    """``created``, ``started`` and ``ended`` (those the record has) in epoch microseconds."""
    out: dict[str, int] = {}
    if raw.get("c"):
        out["created"] = int(raw["c"])
    elif raw.get("created"):
        out["created"] = _seconds_us(raw["created"])
    attempt = int(raw.get("attempt") or 0)
    if raw.get("started"):
        out["started"] = _seconds_us(raw["started"])
    if "b" in raw:
        out["started"] = int(raw.get("c") or 0) + int(raw["b"])
    elif "started" not in out:  # the start of the attempt, written out
        starts = [e["ts"] for e in entries if e["state"] == "running" and e["attempt"] == attempt]
        if starts:
            out["started"] = starts[-1]
    state = raw.get("state", "")
    if raw.get("ended"):
        out["ended"] = _seconds_us(raw["ended"])
    elif "e" in raw and "started" in out:
        out["ended"] = out["started"] + int(raw["e"])
    elif state in _TERMINAL and entries and entries[-1]["state"] == state:
        out["ended"] = entries[-1]["ts"]
    if state == "cached" and "ended" in out:
        out.setdefault("started", out["ended"])  # answered at once: it never ran
    return out


def names_its_task(raw: dict[str, str]) -> bool:
    """Whether a record names its task (else it is its flow run's ``task_name``)."""
    return "n" in raw or "task_name" in raw


def fields(task_run_id: str, raw: dict[str, str], flow_task: str = "") -> dict[str, str]:
    """A record's fields as readers know them: without the history and bookkeeping, with
    ``id`` and the derived ``updated`` (its latest time) and ``duration``. ``flow_task``:
    its flow run's ``task_name``, for a record that names none."""
    out = {k: v for k, v in raw.items()
           if k not in _INTERNAL and not _HISTORY_FIELD.fullmatch(k)}
    for short, name in _RENAMED:
        if short in raw:
            out[name] = raw[short]
    if flow_task and not names_its_task(raw):
        out["task_name"] = flow_task
    worker, executor = holder_of(raw)
    if worker is not None:
        out["worker"] = worker
    if executor is not None:
        out["executor"] = executor
    out.setdefault("id", task_run_id)
    out.setdefault("attempt", "0")
    needs_entries = "b" not in raw or "e" not in raw
    times = _times_us(raw, _entries_us(raw) if needs_entries else [])
    for name, us in times.items():
        out[name] = time_text(us)
    if times and "updated" not in out:
        out["updated"] = time_text(max(times.values()))
    if "started" in times and "ended" in times and "duration" not in out:
        if "e" in raw and "b" in raw:
            out["duration"] = repr(int(raw["e"]) / 1_000_000)
        else:
            out["duration"] = repr(max(0, times["ended"] - times["started"]) / 1_000_000)
    return out


def history(raw: dict[str, str]) -> list[dict[str, Any]]:
    """The state transitions a record holds, oldest first, as named fields (``state``,
    ``ts`` in epoch seconds, ``attempt`` and, where they apply, ``worker``, ``error_type``,
    ``message``, ``retry_in``)."""
    entries = _entries_us(raw)
    holders: dict[int, str] = {}  # attempt -> the worker of its 'running' entry
    for entry in entries:
        entry["ts"] = entry["ts"] / 1_000_000
        if entry["state"] == "running" and entry.get("worker"):
            holders[entry["attempt"]] = entry["worker"]
        elif entry["state"] in _ATTEMPT_ENDS and not entry.get("worker"):
            if entry["attempt"] in holders:
                entry["worker"] = holders[entry["attempt"]]
    return entries
