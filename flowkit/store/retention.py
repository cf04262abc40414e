"""Retention: deleting flow runs past their time, in bounded steps (prune.lua)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowkit.store import functions

if TYPE_CHECKING:
    import redis

    from flowkit.store.limits import Limits

#: Task runs deleted per call of prune: bounds how long one call holds Redis.
PRUNE_BATCH_TASK_RUNS = 2000
#: Flow runs looked at per call of prune_preview (each costs two reads).
PREVIEW_BATCH_FLOW_RUNS = 1000


@dataclass(frozen=True)
class Pruned:
    """What one :func:`prune_flow_runs` deleted, and whether more is due now."""

    flow_runs: int
    task_runs: int
    more: bool


def prune_flow_runs(client: redis.Redis, limits: Limits, ended_before: float,
                    batch: int = PRUNE_BATCH_TASK_RUNS) -> Pruned:
    """Delete finished flow runs that ended before ``ended_before`` (epoch seconds), with their
    task runs, histories, results and logs; at most ``batch`` task runs per call. Runs that
    are still going, or that still have queued or running task runs, are kept."""
    flows, tasks, more = functions.call(client, "prune", limits, [ended_before, batch])
    return Pruned(int(flows), int(tasks), bool(more))


def prune_all(client: redis.Redis, limits: Limits, ended_before: float,
              budget_seconds: float | None = None) -> Pruned:
    """Call :func:`prune_flow_runs` until nothing is due or ``budget_seconds`` have passed;
    the totals, and whether more is still due."""
    stop_at = None if budget_seconds is None else time.monotonic() + budget_seconds
    flows = tasks = 0
    while True:
        pruned = prune_flow_runs(client, limits, ended_before)
        flows, tasks = flows + pruned.flow_runs, tasks + pruned.task_runs
        if not pruned.more or (stop_at is not None and time.monotonic() >= stop_at):
            return Pruned(flows, tasks, pruned.more)


def preview_prune(client: redis.Redis, limits: Limits, ended_before: float,
                  batch: int = PREVIEW_BATCH_FLOW_RUNS) -> Pruned:
    """What :func:`prune_all` would delete now (flow runs, task runs), deleting nothing; it
    asks the same rule as prune (prune.lua's ``prunable``), ``batch`` flow runs per call."""
    flows = tasks = 0
    cursor = 0
    while True:
        more_flows, more_tasks, cursor = functions.call(
            client, "prune_preview", limits, [ended_before, cursor, batch])
        flows, tasks = flows + int(more_flows), tasks + int(more_tasks)
        if not int(cursor):
            return Pruned(flows, tasks, False)
