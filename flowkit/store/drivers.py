"""Drivers' heartbeats and the end of a lost driver's flow runs (drivers.lua).

A driver stamps itself in ``keys.DRIVERS`` with a deadline of the Redis server's time plus its
partition tolerance, listing the flow runs it has open; a supervisor duty ends the runs of a
driver past its deadline (CRASHED, "driver lost") in one atomic call per run. The server's
clock judges both sides, so a driver or worker with a wrong clock neither loses nor keeps a run.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flowkit.store import functions, task_runs

if TYPE_CHECKING:
    import redis

    from flowkit.store.limits import Limits

#: Lost drivers handled per duty run (the rest wait for the next).
LOST_PER_CALL = 50


@dataclass(frozen=True)
class LostDriver:
    """A driver past its deadline and the flow runs it had open."""

    driver_id: str
    runs: list[str]


@dataclass(frozen=True)
class EndedRun:
    """What ending one flow run of a lost driver did."""

    ended: bool
    cancelled: int
    flagged: int


def beat(client: redis.Redis, limits: Limits, driver_id: str, label: str, tolerance: float,
         runs: Iterable[str]) -> set[str]:
    """Stamp a driver alive with its open flow runs; returns the runs that have ended."""
    ended = functions.call(client, "driver_beat", limits,
                           [driver_id, label, repr(float(tolerance)), *runs])
    return {r.decode() for r in ended}


def lost(client: redis.Redis, limits: Limits) -> list[LostDriver]:
    """Drivers whose deadline passed by the server's clock."""
    flat = functions.call(client, "drivers_lost", limits, [LOST_PER_CALL])
    return [LostDriver(flat[i].decode(), [r for r in flat[i + 1].decode().split(",") if r])
            for i in range(0, len(flat), 2)]


def end_lost_run(client: redis.Redis, limits: Limits, driver_id: str,
                 flow_run_id: str) -> EndedRun:
    """End one flow run of a lost driver CRASHED (one atomic call that re-checks the driver's
    deadline), then cancel its task runs in bounded chunks."""
    ended, message = functions.call(client, "driver_run_lost", limits, [driver_id, flow_run_id])
    if not int(ended):
        return EndedRun(False, 0, 0)
    text = message.decode() if isinstance(message, bytes) else str(message)
    cancelled, flagged = task_runs.cancel(
        client, limits, task_run_ids=task_runs.flow_task_run_ids(client, flow_run_id),
        message=text)
    return EndedRun(True, cancelled, flagged)


def forget(client: redis.Redis, limits: Limits, driver_id: str, only_if_lost: bool) -> bool:
    """Drop a driver's heartbeat: a lost one once its runs are ended, or at a clean exit."""
    return bool(functions.call(client, "driver_forget", limits,
                               [driver_id, "1" if only_if_lost else "0"]))


def discard_empty_adhoc(client: redis.Redis, limits: Limits, flow_run_id: str) -> bool:
    """Remove an ad-hoc flow run that holds no task run (its submit failed)."""
    return bool(functions.call(client, "adhoc_discard", limits, [flow_run_id]))
