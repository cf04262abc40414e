"""Flow runs: create, move between states (atomically, in the library), read and search."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flowkit._ids import is_run_id
from flowkit.states import ALL_STATES, RunState
from flowkit.store import functions, keys
from flowkit.store._codec import decode
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

    from flowkit.store.limits import Limits

#: Pages read at most when filtering flow runs by state and name at once.
MAX_FILTER_PAGES = 20


def create_flow_run(client: redis.Redis, limits: Limits, flow_run_id: str, name: str, *,
                    parameters: str = "{}", tags: Iterable[str] = (), parent: str = "",
                    kind: str = "flow", state: RunState = RunState.RUNNING,
                    reply_to: str = "") -> bool:
    """Record a new flow run in ``state`` and index it (runs.lua ``flow_run_create``);
    False when a run with that id exists already."""
    return bool(functions.call(client, "flow_run_create", limits, [
        flow_run_id, name, kind, state.value, parameters, json.dumps(list(tags)), parent,
        reply_to]))


def transition_flow_run(client: redis.Redis, limits: Limits, flow_run_id: str, new: RunState,
                        *, error_type: str = "", error_message: str = "", traceback: str = "",
                        result_preview: str = "") -> RunState | None:
    """Move a flow run to ``new`` in one atomic call that reads its current state, checks the
    move against ``states.ALLOWED`` and keeps the state indexes right.

    Returns:
        The state it left, or None when the run does not exist or the move is not allowed
        (it had already ended: cancelled from the dashboard while its driver finished it).
    """
    extra: list[str] = []
    if error_type:
        extra += ["error_type", error_type, "error_message", error_message,
                  "traceback", traceback]
    if result_preview:
        extra += ["result", result_preview]
    old = functions.call(client, "flow_run_move", limits, [flow_run_id, new.value, *extra])
    return RunState(old.decode()) if old else None


def close_flow_run(client: redis.Redis, limits: Limits, flow_run_id: str) -> RunState | None:
    """A driver leaves a flow run: it ends now if none of its task runs is still to come,
    else it closes by itself when the last one ends. Returns its state after the call (None:
    it had ended already)."""
    state = functions.call(client, "flow_run_close", limits, [flow_run_id])
    return RunState(state.decode()) if state else None


def record_flow_attempt(client: redis.Redis, flow_run_id: str, attempt: int) -> None:
    """Note that a flow run's function runs again (a flow retry); its state stays RUNNING."""
    call(client, client.hset, keys.flow_run(flow_run_id), "attempt", attempt)


def get_flow_run(client: redis.Redis, flow_run_id: str) -> dict[str, str] | None:
    """One flow run's fields, or None (also for a string that is not a run id)."""
    if not is_run_id(flow_run_id):
        return None
    raw = call(client, client.hgetall, keys.flow_run(flow_run_id))
    return decode(raw) if raw else None


def resolve_flow_run_id(client: redis.Redis, prefix: str) -> str | None:
    """The full id of a flow run given its id or a unique prefix of at least 6 characters."""
    if not is_run_id(prefix):
        return None
    if call(client, client.exists, keys.flow_run(prefix)):
        return prefix
    if len(prefix) < 6:
        return None
    matches = [m.decode() for m in call(client, client.zrevrange, keys.FLOW_RUNS, 0, 9999)
               if m.decode().startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def task_counts(row: dict[str, str]) -> dict[str, int]:
    """A flow run's non-zero task counts per state, from its ``n_<state>`` counters."""
    counts = {k[2:]: int(float(v or 0)) for k, v in row.items()
              if k.startswith("n_") and k != "n_total"}
    return {state: n for state, n in counts.items() if n}


def list_flow_runs(client: redis.Redis, *, state: str | None = None, limit: int = 20,
                   before: float | None = None) -> list[dict[str, str]]:
    """Flow runs newest first, optionally in one state, created before ``before``."""
    return search_flow_runs(client, state=state, before=before, limit=limit)


def search_flow_runs(client: redis.Redis, *, state: str | None = None, name: str | None = None,
                     since: float | None = None, until: float | None = None,
                     before: float | None = None, limit: int = 50) -> list[dict[str, str]]:
    """One page of flow runs, newest first, by state or by name (an index each), in a time
    range, created before the cursor ``before`` (the ``created`` of the previous page's last
    row). Reads O(page) keys whatever the history; filtering by state and name at once reads a
    bounded number of extra pages."""
    index = (keys.flow_runs_in_state(state) if state else
             keys.flow_runs_named(name) if name else keys.FLOW_RUNS)
    filtering = bool(state and name)
    high = "+inf"
    if before is not None and (until is None or before <= until):
        high = f"({before}"
    elif until is not None:
        high = str(until)
    low = "-inf" if since is None else str(since)
    rows: list[dict[str, str]] = []
    for _ in range(MAX_FILTER_PAGES):
        wanted = (limit - len(rows)) * (4 if filtering else 1)
        batch = call(client, client.zrevrangebyscore, index, high, low, start=0, num=wanted,
                     withscores=True)
        pipe = client.pipeline(transaction=False)
        for flow_run_id, _ in batch:
            pipe.hgetall(keys.flow_run(flow_run_id.decode()))
        for raw in call(client, pipe.execute) if batch else []:
            if raw and len(rows) < limit and (not filtering or decode(raw).get("name") == name):
                rows.append(decode(raw))
        if not filtering or len(rows) >= limit or len(batch) < wanted:
            break
        high = f"({batch[-1][1]}"
    return rows


def count_flow_runs_by_state(client: redis.Redis) -> dict[str, int]:
    """How many flow runs are in each state (one ZCARD per state index)."""
    pipe = client.pipeline(transaction=False)
    for state in ALL_STATES:
        pipe.zcard(keys.flow_runs_in_state(state.value))
    return {s.value: int(n) for s, n in zip(ALL_STATES, call(client, pipe.execute))}
