"""Rich tables and JSON output of the CLI (the only place that uses rich)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from rich.console import Console
from rich.table import Table

STATE_COLOURS = {
    "pending": "grey62", "scheduled": "cyan", "running": "blue", "retrying": "yellow",
    "completed": "green", "cached": "green", "failed": "red", "timed_out": "red",
    "crashed": "magenta", "cancelled": "grey50",
}

_console = Console(highlight=False, soft_wrap=False)


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _state(value: str) -> str:
    return f"[{STATE_COLOURS.get(value, 'white')}]{value}[/]"


def _when(ts: str | float | None) -> str:
    if not ts:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(ts)))


def _duration(start: str | None, end: str | None) -> str:
    if not start:
        return "-"
    seconds = (float(end) if end else time.time()) - float(start)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.2f} s"
    return f"{seconds / 60:.1f} min"


def _num(row: dict[str, Any], field: str) -> int:
    return int(float(row.get(field) or 0))


def flow_run_json(row: dict[str, str]) -> dict[str, Any]:
    """A flow run as a JSON-friendly dict with numbers and counts per state."""
    from flowkit.store.flow_runs import task_counts

    out: dict[str, Any] = {k: v for k, v in row.items() if not k.startswith("n_")}
    for field in ("created", "started", "updated", "ended"):
        if out.get(field):
            out[field] = float(out[field])
    out["task_counts"] = task_counts(row)
    out["task_total"] = _num(row, "n_total")
    for field in ("parameters", "tags"):
        try:
            out[field] = json.loads(out.get(field) or "null")
        except ValueError:
            pass
    return out


def task_run_json(row: dict[str, Any]) -> dict[str, Any]:
    """A task run as a JSON-friendly dict."""
    out = dict(row)
    for field in ("created", "started", "updated", "ended", "duration"):
        if out.get(field):
            out[field] = float(out[field])
    for field in ("attempt", "retries", "result_size"):
        if field in out:
            out[field] = int(out[field])
    out.pop("reply_to", None)
    try:
        out["parameters"] = json.loads(out.get("parameters") or "null")
        out["tags"] = json.loads(out.get("tags") or "[]")
    except ValueError:
        pass
    return out


def flow_runs(rows: list[dict[str, str]], as_json: bool) -> None:
    if as_json:
        _json([flow_run_json(r) for r in rows])
        return
    table = Table(title=f"{len(rows)} flow runs", title_justify="left")
    table.add_column("id", no_wrap=True, min_width=16)  # whole, so it can be copied
    for column in ("name", "state", "tasks", "started", "duration"):
        table.add_column(column)
    for row in rows:
        counts = flow_run_json(row)["task_counts"]
        summary = " ".join(f"{n} {s}" for s, n in counts.items()) or "-"
        table.add_row(row.get("id", ""), row.get("name", ""), _state(row.get("state", "")),
                      summary, _when(row.get("started")),
                      _duration(row.get("started"), row.get("ended")))
    _console.print(table)


def flow_run_detail(flow_run: dict[str, str], task_runs: list[dict[str, Any]],
                    as_json: bool) -> None:
    if as_json:
        _json({**flow_run_json(flow_run), "task_runs": [task_run_json(t) for t in task_runs]})
        return
    _console.print(f"[bold]{flow_run.get('name')}[/] {flow_run.get('id')}  "
                   f"{_state(flow_run.get('state', ''))}  started {_when(flow_run.get('started'))}"
                   f"  duration {_duration(flow_run.get('started'), flow_run.get('ended'))}")
    _console.print(f"parameters: {flow_run.get('parameters', '{}')}")
    if flow_run.get("error_type"):
        _console.print(f"[red]error: {flow_run['error_type']}: {flow_run.get('error_message')}[/]")
    table = Table(title=f"{len(task_runs)} task runs", title_justify="left")
    table.add_column("id", no_wrap=True, min_width=16)
    for column in ("task", "state", "attempts", "duration", "worker"):
        table.add_column(column, overflow="fold")
    failures = []
    for row in task_runs:
        table.add_row(row.get("id", ""), row.get("task_name", ""), _state(row.get("state", "")),
                      str(row.get("attempt", 0)),
                      _duration(row.get("started"), row.get("ended")) if row.get("ended") else "-",
                      row.get("worker", "-"))
        if row.get("error_type"):
            failures.append(row)
    _console.print(table)
    for row in failures:
        _console.print(f"[red]{row.get('task_name')} {row.get('id')}[/]: "
                       f"{row['error_type']}: {row.get('error_message', '')}", soft_wrap=True)
        for entry in row.get("history", []):
            if entry.get("error_type") and "retry_in" in entry:
                _console.print(f"  attempt {entry.get('attempt')} {entry.get('state')}: "
                               f"{entry.get('error_type')}: {entry.get('message', '')} "
                               f"(retried after {entry['retry_in']:.1f} s)", soft_wrap=True)


def log_lines(lines: list[dict[str, str]], as_json: bool) -> None:
    for line in lines:
        if as_json:
            sys.stdout.write(json.dumps(line) + "\n")
            continue
        ts = float(line.get("ts", 0))
        stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
        who = line.get("name", "")
        if line.get("task_run_id"):
            who += f"-{line['task_run_id'][:6]}"
        sys.stdout.write(f"{stamp} | {line.get('level', ''):<7} | {who} - "
                         f"{line.get('message', '')}\n")
    sys.stdout.flush()


def logs_dropped(flow_run_id: str, written: int, kept: int, as_json: bool) -> None:
    """Tell the reader (on stderr: stdout stays the lines) how many lines the cap trimmed."""
    if as_json:
        sys.stderr.write(json.dumps({"flow_run_id": flow_run_id, "written": written,
                                     "kept": kept, "dropped": written - kept}) + "\n")
        return
    sys.stderr.write(f"flowkit: {written - kept} older log lines of flow run {flow_run_id} "
                     f"were dropped (the stream keeps the last {kept} of {written} written)\n")


def workers(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _json(rows)
        return
    table = Table(title=f"{len(rows)} live workers", title_justify="left")
    for column in ("id", "host", "pid", "queues", "busy", "done", "failed", "heartbeat"):
        table.add_column(column)
    for row in rows:
        age = float(row.get("heartbeat_age") or 0.0)  # by the server's clock (list_workers)
        table.add_row(row.get("id", ""), row.get("host", ""), row.get("pid", ""),
                      ",".join(row.get("queues", [])),
                      f"{row.get('busy', 0)}/{row.get('concurrency', '?')}",
                      row.get("tasks_done", "0"), row.get("tasks_failed", "0"), f"{age:.1f} s ago")
    _console.print(table)


def queues(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        _json(rows)
        return
    table = Table(title=f"{len(rows)} queues", title_justify="left")
    for column in ("queue", "depth", "workers"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], str(row["depth"]), str(row["workers"]))
    _console.print(table)


def cancelled(flow_run_id: str, dropped: int, flagged: int, as_json: bool) -> None:
    if as_json:
        _json({"flow_run_id": flow_run_id, "dropped": dropped, "stopping": flagged})
        return
    _console.print(f"flow run {flow_run_id} [grey50]cancelled[/]: {dropped} queued task runs "
                   f"dropped, {flagged} running being stopped")


def pruned(flow_runs: int, task_runs: int, days: float, as_json: bool,
           dry_run: bool = False) -> None:
    if as_json:
        _json({"flow_runs": flow_runs, "task_runs": task_runs, "older_than_days": days,
               "dry_run": dry_run})
        return
    verb = "would delete" if dry_run else "deleted"
    _console.print(f"{verb} {flow_runs} flow runs and {task_runs} task runs that ended more "
                   f"than {days:g} days ago" + (" (dry run: nothing deleted)" if dry_run else ""))


def cache_explanation(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _json(info)
        return
    if not info["cache_key"]:
        _console.print(f"task run {info['task_run_id']} ({info['task_name']}) has no cache key: "
                       "its task has no cache_policy or cache_key_fn, or the policy said "
                       "not to cache this call")
        return
    status = ("answered from the cache" if info["hit"] else
              "ran and refreshed the cache" if info["refresh"] else "computed (a cache miss)")
    _console.print(f"task run {info['task_run_id']} ({info['task_name']}): {status}")
    _console.print(f"cache key {info['cache_key']} "
                   f"({'stored' if info['stored'] else 'not stored now'})")
    table = Table(title="made of", title_justify="left")
    table.add_column("part")
    table.add_column("hash", overflow="fold")
    for label, value in info["parts"].items():
        table.add_row(label, value)
    _console.print(table)


def cache_cleared(count: int, task_name: str | None, as_json: bool) -> None:
    if as_json:
        _json({"deleted": count, "task": task_name})
        return
    _console.print(f"deleted {count} cached results" + (f" of task {task_name}" if task_name
                                                        else ""))
