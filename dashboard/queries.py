"""Read-only view models of run state for the pages and the JSON API.

Every function reads O(page) keys: counters are maintained at write time by the store's Lua
scripts, so nothing here scans task runs. Nothing here unpickles: parameters and results are the
JSON previews drivers and workers wrote.
"""

from __future__ import annotations

import json
import time
from typing import Any

from flowkit.states import TERMINAL_STATES
from flowkit.store import flow_runs, keys, stats, task_runs, workers as worker_store
from flowkit.store import logs as run_logs
from flowkit.store.connection import call

#: Task runs per page of a flow run.
TASK_PAGE = 100
#: Flow runs per page of the runs list.
RUN_PAGE = 50
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


def run_row(raw: dict[str, str]) -> dict[str, Any]:
    """A flow run for lists: state, times, duration, counts per task state, progress."""
    counts = flow_runs.task_counts(raw)
    total = int(raw.get("n_total") or 0)
    finished = sum(counts.get(s.value, 0) for s in TERMINAL_STATES)
    started, ended = _float(raw.get("started")), _float(raw.get("ended"))
    return {
        "id": raw.get("id", ""), "name": raw.get("name", ""), "kind": raw.get("kind", "flow"),
        "state": raw.get("state", ""), "created": _float(raw.get("created")),
        "started": started, "ended": ended,
        "duration": (ended or time.time()) - started if started else None,
        "task_counts": counts, "task_total": total, "task_finished": finished,
        "progress_pct": round(100.0 * finished / total, 1) if total else 0.0,
        "tags": _json(raw.get("tags"), []), "parent": raw.get("parent", ""),
        "attempt": int(raw.get("attempt") or 1),
    }


def runs_page(client: Any, *, state: str | None = None, name: str | None = None,
              since: float | None = None, until: float | None = None,
              cursor: float | None = None, limit: int = RUN_PAGE) -> dict[str, Any]:
    """Flow runs newest first with filters and a cursor, plus counts per state."""
    rows = flow_runs.search_flow_runs(client, state=state, name=name, since=since, until=until,
                                 before=cursor, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return {
        "runs": [run_row(r) for r in rows],
        "counts": flow_runs.count_flow_runs_by_state(client),
        "next_cursor": _float(rows[-1].get("created")) if more and rows else None,
        "filters": {"state": state, "name": name, "since": since, "until": until},
    }


def task_row(raw: dict[str, str]) -> dict[str, Any]:
    """A task run for tables."""
    started, ended = _float(raw.get("started")), _float(raw.get("ended"))
    return {
        "id": raw.get("id", ""), "task_name": raw.get("task_name", ""),
        "flow_run_id": raw.get("flow_run_id", ""), "state": raw.get("state", ""),
        "queue": raw.get("queue", ""), "attempt": int(raw.get("attempt") or 0),
        "retries": int(raw.get("retries") or 0), "worker": raw.get("worker", ""),
        "started": started, "ended": ended,
        "duration": (ended or time.time()) - started if started else None,
        "cache_hit": raw.get("cache_hit") == "1", "cache_key": raw.get("cache_key", ""),
        "error_type": raw.get("error_type", ""), "error_message": raw.get("error_message", ""),
    }


def run_detail(client: Any, flow_run_id: str, *, offset: int = 0,
               limit: int = TASK_PAGE) -> dict[str, Any] | None:
    """One flow run: its fields, a page of task runs, their timeline and the log tail."""
    raw = flow_runs.get_flow_run(client, flow_run_id)
    if raw is None:
        return None
    run = run_row(raw)
    run.update(parameters=_json(raw.get("parameters"), {}), result=raw.get("result", ""),
               error_type=raw.get("error_type", ""), error_message=raw.get("error_message", ""),
               traceback=raw.get("traceback", ""))
    tasks = [task_row(t) for t in task_runs.get_task_runs(client, flow_run_id, offset=offset,
                                                     limit=limit)]
    logs = [log_line(entry_id, fields)
            for entry_id, fields in run_logs.tail_logs(client, flow_run_id, LOG_TAIL)]
    return {"run": run, "tasks": tasks, "timeline": timeline(run, tasks),
            "page": {"offset": offset, "limit": limit, "total": run["task_total"]},
            "logs": logs, "logs_cursor": logs[-1]["id"] if logs else "0-0"}


def timeline(run: dict[str, Any], tasks: list[dict[str, Any]]) -> dict[str, Any]:
    """Gantt bars of a page of task runs, as percentages of the page's time span."""
    starts = [t["started"] for t in tasks if t["started"]]
    if not starts:
        return {"start": None, "end": None, "bars": []}
    begin = min(starts)
    end = max([t["ended"] or time.time() for t in tasks if t["started"]] + [begin + 1e-3])
    span = end - begin
    bars = [{"id": t["id"], "name": t["task_name"], "state": t["state"],
             "start_pct": round(100 * (t["started"] - begin) / span, 3),
             "width_pct": max(round(100 * ((t["ended"] or time.time()) - t["started"]) / span,
                                    3), 0.3)}
            for t in tasks if t["started"]]
    return {"start": begin, "end": end, "bars": bars}


def log_line(entry_id: str, fields: dict[str, str]) -> dict[str, Any]:
    return {"id": entry_id, "ts": _float(fields.get("ts")), "level": fields.get("level", ""),
            "name": fields.get("name", ""), "task_run_id": fields.get("task_run_id", ""),
            "message": fields.get("message", "")}


def logs_after(client: Any, flow_run_id: str, after: str) -> list[dict[str, Any]]:
    """Log lines after stream id ``after`` (for polling clients)."""
    return [log_line(i, f) for i, f in run_logs.read_logs(client, flow_run_id, after=after,
                                                       count=1000)]


def task_detail(client: Any, task_run_id: str) -> dict[str, Any] | None:
    """One task run: every attempt in its history, its error and cache key."""
    raw = task_runs.get_task_run(client, task_run_id)
    if raw is None:
        return None
    task = task_row(raw)
    flow = flow_runs.get_flow_run(client, task["flow_run_id"]) or {}
    task.update(parameters=_json(raw.get("parameters"), {}), traceback=raw.get("traceback", ""),
                cache_parts=_json(raw.get("cache_parts"), {}),
                upstream=[u for u in raw.get("upstream", "").split(",") if u],
                flow_name=flow.get("name", ""), crashes=int(raw.get("crashes") or 0))
    return {"task": task, "history": task_runs.get_history(client, task_run_id)}


def workers(client: Any) -> list[dict[str, Any]]:
    now = time.time()
    out = []
    for row in worker_store.list_workers(client):
        beat = _float(row.get("heartbeat")) or 0.0
        out.append({
            "id": row.get("id", ""), "host": row.get("host", ""), "pid": int(row.get("pid") or 0),
            "queues": row.get("queues", []), "concurrency": int(row.get("concurrency") or 0),
            "busy": int(row.get("busy") or 0), "heartbeat": beat,
            "heartbeat_age": round(now - beat, 1), "started": _float(row.get("started")),
            "tasks_done": int(row.get("tasks_done") or 0),
            "tasks_failed": int(row.get("tasks_failed") or 0),
            "version": row.get("version", ""), "state": row.get("state", "")})
    return out


def queues(client: Any) -> list[dict[str, Any]]:
    rows = stats.list_queues(client)
    throughput = stats.queue_throughput(client, [r["name"] for r in rows])
    for row in rows:
        row.update(throughput[row["name"]])
        row["done_last_5_minutes"] = sum(row["done_per_minute"][-5:])
    return rows


def dead_letters(client: Any, limit: int = 50) -> list[str]:
    """Newest dead-lettered task run ids."""
    return [i.decode() for i in call(client, client.lrange, keys.DEAD_LETTER, -limit, -1)][::-1]
