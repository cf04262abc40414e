"""``flowkit cache explain|clear``: see why a task run hit or missed the cache; clear it."""

from __future__ import annotations

import json
from typing import Any

import click

from flowkit.cli import render
from flowkit.cli.options import json_option, with_client
from flowkit.errors import RunNotFound


@click.group()
def cache() -> None:
    """Inspect and clear the result cache."""


@cache.command("explain")
@click.argument("task_run_id")
@with_client
@json_option
def explain(client: Any, task_run_id: str, as_json: bool) -> None:
    """Show a task run's cache key and the hash of each part it was made of."""
    from flowkit.store.cache import cache_entry_exists
    from flowkit.store.task_runs import get_task_run

    record = get_task_run(client, task_run_id)
    if record is None:
        raise RunNotFound(f"no task run with id {task_run_id!r}; `flowkit run show RUN_ID` "
                          "lists a flow run's task runs")
    key = record.get("cache_key", "")
    parts = json.loads(record.get("cache_parts") or "{}")
    render.cache_explanation(
        {"task_run_id": task_run_id, "task_name": record.get("task_name", ""),
         "cache_key": key, "parts": parts, "hit": record.get("cache_hit") == "1",
         "refresh": record.get("cache_refresh") == "1",
         "stored": bool(key) and cache_entry_exists(client, key)}, as_json)


@cache.command("clear")
@with_client
@click.option("--task", "task_name", default=None, help="Only this task's entries.")
@json_option
def clear(client: Any, task_name: str | None, as_json: bool) -> None:
    """Delete cached results (all, or one task's)."""
    from flowkit.store.cache import clear_cache

    render.cache_cleared(clear_cache(client, task_name), task_name, as_json)
