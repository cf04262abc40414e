"""``flowkit run ls|show|logs|cancel|prune`` and ``flowkit queue ls``."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from flowkit.cli import render
from flowkit.cli.options import json_option, limits, with_client
from flowkit.errors import ConfigurationError, RunNotFound
from flowkit.states import RunState


@click.group()
def run() -> None:
    """Inspect flow runs."""


def _find(client: Any, run_id: str) -> str:
    from flowkit._ids import shown
    from flowkit.store.flow_runs import resolve_flow_run_id

    found = resolve_flow_run_id(client, run_id)
    if found is None:
        raise RunNotFound(f"no flow run with id {shown(run_id)}; `flowkit run ls` lists recent "
                          "runs")
    return found


@run.command("ls")
@with_client
@click.option("--state", type=click.Choice([s.value for s in RunState], case_sensitive=False),
              default=None, help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@json_option
def ls(client: Any, state: str | None, limit: int, as_json: bool) -> None:
    """List flow runs, newest first."""
    from flowkit.store.flow_runs import list_flow_runs

    render.flow_runs(list_flow_runs(client, state=state and state.lower(), limit=limit), as_json)


@run.command("show")
@click.argument("run_id")
@with_client
@json_option
@click.option("--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Task runs to show.")
def show(client: Any, run_id: str, as_json: bool, limit: int) -> None:
    """Show a flow run and its task runs (states, attempts, durations, workers)."""
    from flowkit.store.flow_runs import get_flow_run
    from flowkit.store.task_runs import get_history, get_task_runs

    flow_run_id = _find(client, run_id)
    flow_run = get_flow_run(client, flow_run_id) or {}
    task_runs = [{**task_run, "history": get_history(client, task_run["id"])}
                 for task_run in get_task_runs(client, flow_run_id, limit=limit)]
    render.flow_run_detail(flow_run, task_runs, as_json)


@run.command("logs")
@click.argument("run_id")
@with_client
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the run ends.")
@click.option("--tail", "tail", default=None, metavar="N",
              help="Only the last N lines (then new ones, with --follow).")
@json_option
def logs(client: Any, run_id: str, follow: bool, tail: str | None, as_json: bool) -> None:
    """Print a flow run's log lines: all it has, oldest first (one JSON object per line with
    --json). Lines trimmed by the stream's cap are counted on stderr."""
    from flowkit.store.logs import iter_logs, log_counts, tail_logs

    count = None if tail is None else _line_count(tail, "--tail")
    flow_run_id = _find(client, run_id)
    counts = log_counts(client, flow_run_id)
    if counts.dropped and (count is None or count > counts.kept):
        render.logs_dropped(flow_run_id, counts.written, counts.kept, as_json)
    last = "-"
    pages = iter([tail_logs(client, flow_run_id, count)]) if count else iter_logs(client,
                                                                                 flow_run_id)
    for entries in pages:
        if entries:
            last = entries[-1][0]
            render.log_lines([fields for _, fields in entries], as_json)
    if follow:
        _follow(client, flow_run_id, last, as_json)


def _line_count(value: str, option: str) -> int:
    """A count of lines given on the command line (a whole number, at least 1)."""
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ConfigurationError(f"{option} takes a whole number of lines (1 or more), not "
                                 f"{value!r}")
    return count


def _follow(client: Any, flow_run_id: str, last: str, as_json: bool) -> None:
    """Print new log lines of a flow run as they come, until it has ended and gone quiet."""
    from flowkit.store.flow_runs import get_flow_run
    from flowkit.store.logs import read_logs

    while True:
        entries = read_logs(client, flow_run_id, after=last)
        if entries:
            last = entries[-1][0]
            render.log_lines([fields for _, fields in entries], as_json)
            continue
        state = (get_flow_run(client, flow_run_id) or {}).get("state", "")
        if state and RunState(state).is_terminal:
            return
        time.sleep(0.3)


@run.command("cancel")
@click.argument("run_id")
@with_client
@json_option
def cancel(client: Any, run_id: str, as_json: bool) -> None:
    """Cancel a flow run: queued task runs are dropped, running ones killed within seconds."""
    from flowkit.store.task_runs import cancel as cancel_runs

    flow_run_id = _find(client, run_id)
    dropped, flagged = cancel_runs(client, limits(), flow_run_id=flow_run_id,
                                   message=f"flow run {flow_run_id} cancelled from the CLI")
    render.cancelled(flow_run_id, dropped, flagged, as_json)


@run.command("prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=None,
              help="Delete finished runs that ended more than this many days ago "
                   "[default: FLOWKIT_RUN_RETENTION_DAYS].")
@click.option("--yes", "-y", is_flag=True,
              help="Delete without asking (needed when stdin is not a terminal).")
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@with_client
@json_option
def prune(client: Any, days: float | None, yes: bool, dry_run: bool, as_json: bool) -> None:
    """Delete finished flow runs (with task runs, results and logs) past the retention.

    Workers do this once a minute on their own; this is for a one-off cleanup. Runs still
    going, or with task runs still queued or running, are kept whatever their age. It asks
    first (with the counts) unless --yes is given; --dry-run only counts.
    """
    from flowkit.settings import get_settings
    from flowkit.store.retention import preview_prune, prune_all

    if days is None:
        days = get_settings().run_retention_days
        if not days:
            raise click.UsageError("FLOWKIT_RUN_RETENTION_DAYS is 0 (keep forever): pass "
                                   "--older-than DAYS to prune anyway")
    cutoff = time.time() - days * 86400
    if dry_run:
        due = preview_prune(client, limits(), cutoff)
        render.pruned(due.flow_runs, due.task_runs, days, as_json, dry_run=True)
        return
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigurationError("run prune asks before deleting and stdin is not a "
                                     "terminal: pass --yes to delete, or --dry-run to count")
        due = preview_prune(client, limits(), cutoff)
        click.confirm(f"Delete {due.flow_runs} finished flow runs ({due.task_runs} task runs) "
                      f"that ended more than {days:g} days ago?", abort=True, err=True)
    pruned = prune_all(client, limits(), cutoff)
    render.pruned(pruned.flow_runs, pruned.task_runs, days, as_json)


@click.group()
def queue() -> None:
    """Inspect queues."""


@queue.command("ls")
@with_client
@json_option
def queue_ls(client: Any, as_json: bool) -> None:
    """List queues with their depth and live workers."""
    from flowkit.store.stats import list_queues

    render.queues(list_queues(client), as_json)


queue_ls.name = "ls"
