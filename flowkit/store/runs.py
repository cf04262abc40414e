"""Writes and reads of flow runs and task runs (the data model in ``keys.py``)."""

from __future__ import annotations

import json
import pickle
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from flowkit.states import ALL_STATES, TERMINAL_STATES, RunState
from flowkit.store import keys
from flowkit.store import lua
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

#: RQ jobs for flowkit task runs call this function, so a stock ``rq worker`` can run them too.
RQ_FUNCTION = "flowkit.workers.rq_compat.run_task_run"
#: Replies kept per driver stream before Redis trims the oldest.
REPLY_MAXLEN = 200_000
#: Pages read at most when filtering flow runs by state and name at once.
MAX_FILTER_PAGES = 20
#: Task runs per enqueue script call: bounds how long one call holds the server...
ENQUEUE_CHUNK_RUNS = 500
#: ...and how many envelope bytes it carries, so workers start on the first chunk early.
ENQUEUE_CHUNK_BYTES = 4 << 20
#: Call bodies above this size are written with a plain HSET beside the script call.
LARGE_BODY_BYTES = 64 << 10


def new_id() -> str:
    """A new run id: 16 hex characters, random."""
    return secrets.token_hex(8)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


@dataclass
class TaskRunSpec:
    """Everything a driver writes to queue one task call."""

    id: str
    flow_run_id: str
    task_name: str
    queue: str
    envelope: bytes
    body: bytes
    reply_to: str
    parameters: str = "{}"
    tags: list[str] = field(default_factory=list)
    retries: int = 0
    held: bool = False
    upstream: list[str] = field(default_factory=list)
    cache_key: str = ""
    cache_parts: str = ""


def create_flow_run(client: redis.Redis, flow_run_id: str, name: str, *, parameters: str = "{}",
                    tags: Iterable[str] = (), parent: str = "", kind: str = "flow",
                    state: RunState = RunState.RUNNING, reply_to: str = "") -> None:
    """Record a new flow run in ``state`` and index it."""
    now = time.time()
    fields: dict[Any, Any] = {
        "id": flow_run_id, "name": name, "kind": kind, "state": state.value, "created": now,
        "started": now, "updated": now, "parameters": parameters, "tags": json.dumps(list(tags)),
        "parent": parent, "n_total": 0, "reply_to": reply_to,
    }
    fields.update({f"n_{s.value}": 0 for s in ALL_STATES})
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.flow_run(flow_run_id), mapping=fields)
    pipe.zadd(keys.FLOW_RUNS, {flow_run_id: now})
    pipe.zadd(keys.flow_runs_in_state(state.value), {flow_run_id: now})
    pipe.zadd(keys.flow_runs_named(name), {flow_run_id: now})
    pipe.xadd(keys.EVENTS, {"kind": "flow", "id": flow_run_id, "state": state.value},
              maxlen=10_000, approximate=True)
    call(client, pipe.execute)


def set_flow_run_state(client: redis.Redis, flow_run_id: str, old: RunState, new: RunState, *,
                       error_type: str = "", error_message: str = "", traceback: str = "",
                       result_preview: str = "") -> None:
    """Move a flow run to ``new``, keeping the per-state indexes right."""
    now = time.time()
    key = keys.flow_run(flow_run_id)
    created = call(client, client.hget, key, "created")
    fields: dict[Any, Any] = {"state": new.value, "updated": now}
    if new.is_terminal:
        fields["ended"] = now
    if error_type:
        fields.update(error_type=error_type, error_message=error_message, traceback=traceback)
    if result_preview:
        fields["result"] = result_preview
    pipe = client.pipeline(transaction=False)
    pipe.hset(key, mapping=fields)
    pipe.zrem(keys.flow_runs_in_state(old.value), flow_run_id)
    pipe.zadd(keys.flow_runs_in_state(new.value), {flow_run_id: float(created or now)})
    pipe.xadd(keys.EVENTS, {"kind": "flow", "id": flow_run_id, "state": new.value},
              maxlen=10_000, approximate=True)
    call(client, pipe.execute)


def _rq_data_template() -> tuple[bytes, bytes]:
    """RQ's job data (a pickled call of RQ_FUNCTION) split around a 16-character id."""
    marker = "\x00" * 16
    data = pickle.dumps((RQ_FUNCTION, None, (marker,), {}), protocol=4)
    before, after = data.split(marker.encode())
    return before, after


_RQ_DATA = _rq_data_template()


@dataclass(frozen=True)
class CacheSettings:
    """How the task runs of one submit use the cache."""

    expiration_ms: int | None = None
    refresh: bool = False
    result_ttl_ms: int = 7 * 24 * 3600 * 1000
    inline_bytes: int = 64 * 1024


def enqueue_task_runs(client: redis.Redis, specs: list[TaskRunSpec],
                      cache: CacheSettings | None = None) -> None:
    """Write task runs and queue the ready ones (or answer them from the cache): one script
    call per chunk of runs.

    All specs of one call share task, flow run, queue and driver (one ``submit``/``map``).
    """
    if not specs:
        return
    cache = cache or CacheSettings()
    first = specs[0]
    now = time.time()
    shared = [now, _iso(now), first.flow_run_id, first.task_name, first.queue, first.reply_to,
              json.dumps(first.tags), first.retries, keys.TASK_RUN_PREFIX, keys.RQ_JOB_PREFIX,
              *_RQ_DATA, keys.CACHE_PREFIX,
              "" if cache.expiration_ms is None else cache.expiration_ms,
              "1" if cache.refresh else "0", keys.RESULT_PREFIX, cache.result_ttl_ms,
              REPLY_MAXLEN, cache.inline_bytes]
    script_keys = [keys.queue(first.queue), keys.flow_run(first.flow_run_id),
                   keys.flow_run_tasks(first.flow_run_id), keys.RQ_QUEUES, keys.EVENTS]
    call(client, lua.execute, client, lambda pipe: _queue_enqueue(client, pipe, specs, shared,
                                                                  script_keys))


def _queue_enqueue(client: redis.Redis, pipe: Any, specs: list[TaskRunSpec], shared: list[Any],
                   script_keys: list[str]) -> None:
    args: list[Any] = list(shared)
    size = 0
    for spec in specs:
        body = spec.body
        if len(body) > LARGE_BODY_BYTES:
            # Large calls skip the script's arguments (Lua would copy them once more).
            pipe.hset(keys.rq_job(spec.id), "flowkit_body", body)
            body = b""
        args += [spec.id, spec.envelope, body, spec.parameters, "1" if spec.held else "0",
                 ",".join(spec.upstream), spec.cache_key, spec.cache_parts]
        size += len(spec.body)
        if len(args) - len(shared) >= 8 * ENQUEUE_CHUNK_RUNS or size >= ENQUEUE_CHUNK_BYTES:
            lua.run(client, "enqueue", script_keys, args, pipe=pipe)
            args, size = list(shared), 0
    if len(args) > len(shared):
        lua.run(client, "enqueue", script_keys, args, pipe=pipe)


def release_task_runs(client: redis.Redis, ready: list[tuple[str, str]]) -> None:
    """Queue held task runs whose dependencies completed: ``(task_run_id, queue)`` pairs
    (see ready.lua: queued the way every script queues, ringing the queue's bell)."""
    if ready:
        call(client, lua.run, client, "ready", [],
             [keys.RQ_JOB_PREFIX, keys.RQ_QUEUE_PREFIX, *(v for pair in ready for v in pair)])


def fail_without_running(client: redis.Redis, task_run_id: str, flow_run_id: str,
                         state: RunState, error_type: str, message: str) -> None:
    """End a task run that never started (its upstream failed, or it was cancelled)."""
    now = time.time()
    tr = keys.task_run(task_run_id)
    pipe = client.pipeline(transaction=False)
    pipe.hset(tr, mapping={"state": state.value, "ended": now, "updated": now,
                           "error_type": error_type, "error_message": message})
    pipe.rpush(keys.task_run_history(task_run_id), json.dumps(
        {"state": state.value, "ts": now, "attempt": 0, "error_type": error_type,
         "message": message}))
    pipe.hincrby(keys.flow_run(flow_run_id), "n_pending", -1)
    pipe.hincrby(keys.flow_run(flow_run_id), f"n_{state.value}", 1)
    pipe.delete(keys.rq_job(task_run_id))
    pipe.xadd(keys.EVENTS, {"kind": "task", "id": task_run_id, "flow_run_id": flow_run_id,
                            "state": state.value}, maxlen=10_000, approximate=True)
    call(client, pipe.execute)


def append_log(client: redis.Redis | Any, flow_run_id: str, record: dict[Any, Any],
               reply_to: str = "") -> None:
    """Add one log line to the flow run's log stream (and to the driver's reply stream)."""
    pipe = client.pipeline(transaction=False)
    pipe.xadd(keys.logs(flow_run_id), record, maxlen=100_000, approximate=True)
    if reply_to:
        pipe.xadd(reply_to, {"kind": "log", **record}, maxlen=REPLY_MAXLEN, approximate=True)
    call(client, pipe.execute)


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}


def get_flow_run(client: redis.Redis, flow_run_id: str) -> dict[str, str] | None:
    """One flow run's fields, or None."""
    raw = call(client, client.hgetall, keys.flow_run(flow_run_id))
    return _decode(raw) if raw else None


def resolve_flow_run_id(client: redis.Redis, prefix: str) -> str | None:
    """The full id of a flow run given its id or a unique prefix of at least 6 characters."""
    if call(client, client.exists, keys.flow_run(prefix)):
        return prefix
    if len(prefix) < 6:
        return None
    matches = [m.decode() for m in call(client, client.zrevrange, keys.FLOW_RUNS, 0, 9999)
               if m.decode().startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def list_flow_runs(client: redis.Redis, *, state: str | None = None, limit: int = 20,
                   before: float | None = None) -> list[dict[str, str]]:
    """Flow runs newest first, optionally in one state, created before ``before``."""
    return search_flow_runs(client, state=state, before=before, limit=limit)


def task_counts(row: dict[str, str]) -> dict[str, int]:
    """A flow run's non-zero task counts per state, from its ``n_<state>`` counters."""
    counts = {k[2:]: int(float(v or 0)) for k, v in row.items()
              if k.startswith("n_") and k != "n_total"}
    return {state: n for state, n in counts.items() if n}


def get_task_runs(client: redis.Redis, flow_run_id: str, *, offset: int = 0,
                  limit: int = 1000) -> list[dict[str, str]]:
    """A page of a flow run's task runs in submission order."""
    ids = call(client, client.zrange, keys.flow_run_tasks(flow_run_id), offset,
               offset + limit - 1)
    pipe = client.pipeline(transaction=False)
    for task_run_id in ids:
        pipe.hgetall(keys.task_run(task_run_id.decode()))
    return [_decode(raw) for raw in call(client, pipe.execute) if raw]


def get_task_run(client: redis.Redis, task_run_id: str) -> dict[str, str] | None:
    """One task run's fields, or None."""
    raw = call(client, client.hgetall, keys.task_run(task_run_id))
    return _decode(raw) if raw else None


def get_history(client: redis.Redis, task_run_id: str) -> list[dict[str, Any]]:
    """A task run's state transitions, oldest first."""
    raw = call(client, client.lrange, keys.task_run_history(task_run_id), 0, -1)
    return [json.loads(item) for item in raw]


def read_logs(client: redis.Redis, flow_run_id: str, after: str = "-",
              count: int = 10_000) -> list[tuple[str, dict[str, str]]]:
    """Log lines of a flow run after stream id ``after`` (exclusive), oldest first."""
    start = after if after == "-" else f"({after}"
    entries = call(client, client.xrange, keys.logs(flow_run_id), start, "+", count)
    return [(entry_id.decode(), _decode(fields)) for entry_id, fields in entries]


def cancel(client: redis.Redis, *, flow_run_id: str = "", task_run_ids: Iterable[str] = (),
           message: str = "cancelled", result_ttl_ms: int = 7 * 24 * 3600 * 1000,
           inline_bytes: int = 64 * 1024) -> tuple[int, int]:
    """Cancel a flow run's task runs, or the given ones: ``(dropped from queues, running
    attempts flagged for their supervisors to kill)``. The flow run itself ends CANCELLED and
    the driver running it is told."""
    from flowkit.store.queue import settle_cache

    flagged, *dropped = call(client, lua.run, client, "cancel",
                            [keys.CANCELLING, keys.SCHEDULED, keys.EVENTS],
                            [time.time(), keys.TASK_RUN_PREFIX, keys.FLOW_RUN_PREFIX,
                             keys.RQ_QUEUE_PREFIX, keys.RQ_JOB_PREFIX, REPLY_MAXLEN, message,
                             flow_run_id, *task_run_ids])
    settle_cache(client, [i.decode() for i in dropped], result_ttl_ms, inline_bytes)
    if flow_run_id:
        run = get_flow_run(client, flow_run_id) or {}
        state = RunState(run.get("state", "running"))
        if not state.is_terminal:
            set_flow_run_state(client, flow_run_id, state, RunState.CANCELLED,
                               error_type="flowkit.errors.CancelledRun", error_message=message)
        if run.get("reply_to"):
            call(client, client.xadd, run["reply_to"],
                 {"kind": "cancel_flow", "id": flow_run_id, "message": message},
                 maxlen=REPLY_MAXLEN, approximate=True)
    return len(dropped), int(flagged)


def cache_entry_exists(client: redis.Redis, cache_key: str) -> bool:
    """Whether a result is stored under ``cache_key``."""
    return bool(call(client, client.exists, keys.cache(cache_key)))


def clear_cache(client: redis.Redis, task_name: str | None = None) -> int:
    """Delete cached results, all or those one task wrote; returns how many were deleted."""
    if task_name is not None:
        index_keys = [keys.cache_index(task_name)]
    else:
        index_keys = [k.decode() for k in call(client, lambda: list(
            client.scan_iter(match=keys.CACHE_INDEX_PREFIX + "*", count=1000)))]
    deleted = 0
    for index in index_keys:
        cache_keys = [k.decode() for k in call(client, client.smembers, index)]
        for start in range(0, len(cache_keys), 500):
            chunk = [keys.cache(k) for k in cache_keys[start:start + 500]]
            deleted += int(call(client, client.delete, *chunk))
        call(client, client.delete, index)
    return deleted


def retry(client: redis.Redis, flow_run_id: str) -> tuple[int, int]:
    """Queue a flow run's failed task runs again: ``(retried, no longer retryable)``."""
    retried, skipped = call(client, lua.run, client, "retry",
                            [keys.flow_run(flow_run_id), keys.flow_run_tasks(flow_run_id),
                             keys.EVENTS],
                            [time.time(), keys.TASK_RUN_PREFIX, keys.RQ_JOB_PREFIX,
                             keys.RQ_QUEUE_PREFIX, keys.FLOW_RUNS_STATE_PREFIX, flow_run_id])
    return int(retried), int(skipped)


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
            if raw and len(rows) < limit and (not filtering or _decode(raw).get("name") == name):
                rows.append(_decode(raw))
        if not filtering or len(rows) >= limit or len(batch) < wanted:
            break
        high = f"({batch[-1][1]}"
    return rows


#: Task runs deleted per call of the prune script: bounds how long one call holds Redis.
PRUNE_BATCH_TASK_RUNS = 2000


@dataclass(frozen=True)
class Pruned:
    """What one :func:`prune_flow_runs` deleted, and whether more is due now."""

    flow_runs: int
    task_runs: int
    more: bool


def prune_flow_runs(client: redis.Redis, ended_before: float,
                    batch: int = PRUNE_BATCH_TASK_RUNS) -> Pruned:
    """Delete finished flow runs that ended before ``ended_before`` (epoch seconds), with their
    task runs, histories, results and logs; at most ``batch`` task runs per call (see
    prune.lua). Runs that are still going, or that still have queued or running task runs,
    are kept."""
    flows, tasks, more = call(
        client, lua.run, client, "prune", [keys.FLOW_RUNS, keys.DEAD_LETTER],
        [ended_before, batch, keys.FLOW_RUN_PREFIX, keys.TASK_RUN_PREFIX, keys.RQ_JOB_PREFIX,
         keys.RESULT_PREFIX, keys.logs(""), keys.FLOW_RUNS_STATE_PREFIX, keys.flow_runs_named(""),
         *sorted(s.value for s in TERMINAL_STATES)])
    return Pruned(int(flows), int(tasks), bool(more))


def prune_all(client: redis.Redis, ended_before: float,
              budget_seconds: float | None = None) -> Pruned:
    """Call :func:`prune_flow_runs` until nothing is due or ``budget_seconds`` have passed;
    the totals, and whether more is still due."""
    stop_at = None if budget_seconds is None else time.monotonic() + budget_seconds
    flows = tasks = 0
    while True:
        pruned = prune_flow_runs(client, ended_before)
        flows, tasks = flows + pruned.flow_runs, tasks + pruned.task_runs
        if not pruned.more or (stop_at is not None and time.monotonic() >= stop_at):
            return Pruned(flows, tasks, pruned.more)


def count_flow_runs_by_state(client: redis.Redis) -> dict[str, int]:
    """How many flow runs are in each state (one ZCARD per state index)."""
    pipe = client.pipeline(transaction=False)
    for state in ALL_STATES:
        pipe.zcard(keys.flow_runs_in_state(state.value))
    return {s.value: int(n) for s, n in zip(ALL_STATES, call(client, pipe.execute))}


def tail_logs(client: redis.Redis, flow_run_id: str, count: int = 200
              ) -> list[tuple[str, dict[str, str]]]:
    """The last ``count`` log lines of a flow run, oldest first."""
    entries = call(client, client.xrevrange, keys.logs(flow_run_id), "+", "-", count)
    return [(entry_id.decode(), _decode(fields)) for entry_id, fields in reversed(entries)]


def queue_throughput(client: redis.Redis, names: list[str], minutes: int = 15
                     ) -> dict[str, dict[str, Any]]:
    """Per queue: running attempts and task runs finished per minute over the last minutes."""
    now_minute = int(time.time() // 60)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.queue_stats(name))
    out: dict[str, dict[str, Any]] = {}
    for name, raw in zip(names, call(client, pipe.execute)):
        stats = _decode(raw)
        done = [int(stats.get(f"done:{m}", 0)) for m in range(now_minute - minutes + 1,
                                                                now_minute + 1)]
        failed = [int(stats.get(f"failed:{m}", 0)) for m in range(now_minute - minutes + 1,
                                                                    now_minute + 1)]
        out[name] = {"running": max(0, int(stats.get("running", 0))), "done_per_minute": done,
                     "failed_per_minute": failed}
    return out
