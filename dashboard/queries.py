"""Read-only view models of run state for the pages and the JSON API (shapes in schemas.py).

Every function reads O(page) keys: counters are maintained at write time by the store's Lua
library, so nothing here scans task runs. Nothing here unpickles: parameters and results are
the JSON previews drivers and workers wrote.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flowkit.dashboard import schemas as s
from flowkit.states import TERMINAL_STATES
from flowkit.store import flow_runs, keys, stats, task_runs
from flowkit.store import logs as run_logs
from flowkit.store import workers as worker_store
from flowkit.store.connection import call

#: Log lines shown when a run page opens (the live tail adds the rest).
LOG_TAIL = 200


def _float(value: Any) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _json(text: str | None, default: Any) -> Any:
    try:
        return json.loads(text) if text else default
    except ValueError:
        return text


def _span(started: float | None, ended: float | None) -> float | None:
    return (ended or time.time()) - started if started else None


def _run_fields(raw: dict[str, str]) -> dict[str, Any]:
    counts = flow_runs.task_counts(raw)
    total = int(raw.get("n_total") or 0)
    finished = sum(counts.get(state.value, 0) for state in TERMINAL_STATES)
    started, ended = _float(raw.get("started")), _float(raw.get("ended"))
    return {
        "id": raw.get("id", ""), "name": raw.get("name", ""), "kind": raw.get("kind", "flow"),
        "state": raw.get("state", ""), "created": _float(raw.get("created")),
        "started": started, "ended": ended, "duration": _span(started, ended),
        "task_counts": counts, "task_total": total, "task_finished": finished,
        "progress_pct": round(100.0 * finished / total, 1) if total else 0.0,
        "tags": _json(raw.get("tags"), []), "parent": raw.get("parent", ""),
        "attempt": int(raw.get("attempt") or 1),
    }


def runs_page(client: Any, query: s.RunsQuery) -> s.RunsPage:
    """Flow runs newest first with filters and a cursor, plus counts per state."""
    state = query.state.value if query.state else None
    rows = flow_runs.search_flow_runs(client, state=state, name=query.name, since=query.since,
                                      until=query.until, before=query.cursor,
                                      limit=query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[:query.limit]
    return s.RunsPage(
        runs=[s.RunRow(**_run_fields(r)) for r in rows],
        counts=flow_runs.count_flow_runs_by_state(client),
        next_cursor=_float(rows[-1].get("created")) if more and rows else None,
        filters=s.RunFilters(state=query.state, name=query.name, since=query.since,
                             until=query.until))


def _task_fields(raw: dict[str, str]) -> dict[str, Any]:
    started, ended = _float(raw.get("started")), _float(raw.get("ended"))
    return {
        "id": raw.get("id", ""), "task_name": raw.get("task_name", ""),
        "flow_run_id": raw.get("flow_run_id", ""), "state": raw.get("state", ""),
        "queue": raw.get("queue", ""), "attempt": int(raw.get("attempt") or 0),
        "retries": int(raw.get("retries") or 0), "worker": raw.get("worker", ""),
        "started": started, "ended": ended, "duration": _span(started, ended),
        "cache_hit": raw.get("cache_hit") == "1", "cache_key": raw.get("cache_key", ""),
        "error_type": raw.get("error_type", ""), "error_message": raw.get("error_message", ""),
    }


def run_detail(client: Any, flow_run_id: str, query: s.RunQuery) -> s.RunDetail | None:
    """One flow run: its fields, a page of task runs, their timeline and the log tail."""
    raw = flow_runs.get_flow_run(client, flow_run_id)
    if raw is None:
        return None
    run = s.RunInfo(**_run_fields(raw), parameters=_json(raw.get("parameters"), {}),
                    result=raw.get("result", ""), error_type=raw.get("error_type", ""),
                    error_message=raw.get("error_message", ""),
                    traceback=raw.get("traceback", ""))
    tasks = [s.TaskRow(**_task_fields(t)) for t in task_runs.get_task_runs(
        client, flow_run_id, offset=query.offset, limit=query.limit)]
    logs = log_tail(client, flow_run_id)
    return s.RunDetail(run=run, tasks=tasks, timeline=timeline(tasks),
                       page=s.PageInfo(offset=query.offset, limit=query.limit,
                                       total=run.task_total),
                       logs=logs, logs_cursor=logs[-1].id if logs else "0-0",
                       log_counts=log_counts(client, flow_run_id))


def timeline(tasks: list[s.TaskRow]) -> s.Timeline:
    """Gantt bars of a page of task runs, as percentages of the page's time span."""
    started = [t for t in tasks if t.started]
    if not started:
        return s.Timeline(start=None, end=None, bars=[])
    now = time.time()
    begin = min(t.started for t in started if t.started)
    end = max([t.ended or now for t in started] + [begin + 1e-3])
    span = end - begin
    bars = [s.TimelineBar(id=t.id, name=t.task_name, state=t.state,
                          start_pct=round(100 * ((t.started or begin) - begin) / span, 3),
                          width_pct=max(round(100 * ((t.ended or now) - (t.started or begin))
                                              / span, 3), 0.3))
            for t in started]
    return s.Timeline(start=begin, end=end, bars=bars)


def log_line(entry_id: str, fields: dict[str, str]) -> s.LogLine:
    return s.LogLine(id=entry_id, ts=_float(fields.get("ts")), level=fields.get("level", ""),
                     name=fields.get("name", ""), task_run_id=fields.get("task_run_id", ""),
                     message=fields.get("message", ""))


def log_tail(client: Any, flow_run_id: str) -> list[s.LogLine]:
    """The last LOG_TAIL log lines of a flow run, oldest first."""
    return [log_line(i, f) for i, f in run_logs.tail_logs(client, flow_run_id, LOG_TAIL)]


def logs_after(client: Any, flow_run_id: str, after: str) -> s.Logs:
    """Log lines after stream id ``after`` (for polling clients)."""
    return s.Logs(logs=[log_line(i, f) for i, f in run_logs.read_logs(
        client, flow_run_id, after=after, count=1000)], log_counts=log_counts(client, flow_run_id))


def log_counts(client: Any, flow_run_id: str) -> s.LogCounts:
    """Written, kept and dropped log lines of a flow run."""
    counts = run_logs.log_counts(client, flow_run_id)
    return s.LogCounts(written=counts.written, kept=counts.kept, dropped=counts.dropped)


def task_detail(client: Any, task_run_id: str) -> s.TaskDetail | None:
    """One task run: every attempt in its history, its error and cache key."""
    raw = task_runs.get_task_run(client, task_run_id)
    if raw is None:
        return None
    flow = flow_runs.get_flow_run(client, raw.get("flow_run_id", "")) or {}
    task = s.TaskInfo(**_task_fields(raw), parameters=_json(raw.get("parameters"), {}),
                      traceback=raw.get("traceback", ""),
                      cache_parts=_json(raw.get("cache_parts"), {}),
                      upstream=[u for u in raw.get("upstream", "").split(",") if u],
                      flow_name=flow.get("name", ""), crashes=int(raw.get("crashes") or 0))
    history = [s.HistoryEntry(**h) for h in task_runs.get_history(client, task_run_id)]
    return s.TaskDetail(task=task, history=history)


def workers(client: Any) -> s.Workers:
    rows = []
    for row in worker_store.list_workers(client):
        beat = _float(row.get("heartbeat")) or 0.0
        rows.append(s.WorkerRow(
            id=row.get("id", ""), host=row.get("host", ""), pid=int(row.get("pid") or 0),
            queues=row.get("queues", []), concurrency=int(row.get("concurrency") or 0),
            busy=int(row.get("busy") or 0), heartbeat=beat,
            heartbeat_age=round(float(row["heartbeat_age"]), 1), started=_float(row.get("started")),
            tasks_done=int(row.get("tasks_done") or 0),
            tasks_failed=int(row.get("tasks_failed") or 0), version=row.get("version", ""),
            state=row.get("state", "")))
    return s.Workers(workers=rows)


def queues(client: Any, dead_letter_limit: int = 50) -> s.Queues:
    """Every queue with depth, workers and throughput; the newest dead-lettered task runs."""
    rows = stats.list_queues(client)
    throughput = stats.queue_throughput(client, [r["name"] for r in rows])
    out = []
    for row in rows:
        row.update(throughput[row["name"]])
        out.append(s.QueueRow(**row, done_last_5_minutes=sum(row["done_per_minute"][-5:])))
    dead = [i.decode() for i in call(client, client.lrange, keys.DEAD_LETTER,
                                     -dead_letter_limit, -1)][::-1]
    return s.Queues(queues=out, dead_letters=dead)
