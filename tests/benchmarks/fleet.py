"""The fleet rows: many workers and two drivers on one Redis, as a deployment would run.

flowkit: 4 ``flowkit worker start -c 2`` supervisors (8 executors); the loop: 8 loop workers
(the same number of task-running processes). Two driver processes (fleet_driver.py), started
together through a Redis list, each map FLEET_TASKS no-op tasks on the same queue. Reported:
tasks/s over the whole window (first submit to last completion, from both drivers' clocks,
which are this machine's one clock), Redis server CPU per task (INFO cpu user + system from
just before the go signal to just after the last driver reported done), and the ceiling of one
Redis core, 1 / (server CPU per task) in tasks/s: what this server could sustain if the clients
were free. Every result is checked by its driver, and both drivers must report all of theirs,
or the fleet fails.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import redis
from fleet_driver import KEY
from machine import counters
from procs import spawn, stop_procs, wait_until
from systems import QUEUE

#: Tasks each of the two drivers maps.
FLEET_TASKS, FLEET_DRIVERS = 5000, 2
SUPERVISORS, EXECUTORS = 4, 2
TIMEOUT = 180.0


def start_workers(system: str, url: str, env: dict[str, str], home: Path,
                  client: redis.Redis) -> list[subprocess.Popen[bytes]]:
    """The fleet's workers, all registered (beating) before this returns."""
    if system == "flowkit":
        from flowkit.store.workers import live_workers_for

        cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", str(EXECUTORS), "-q",
               QUEUE, "--redis-url", url]
        procs = [spawn(cmd, env, home / f"fleet-flowkit-worker-{i}.log")
                 for i in range(SUPERVISORS)]
        wait_until(lambda: live_workers_for(client, QUEUE) >= SUPERVISORS, 30,
                   f"{SUPERVISORS} flowkit supervisors")
        return procs
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "hand_loop.py"), url,
           "bench-loop"]
    procs = [spawn(cmd, env, home / f"fleet-loop-worker-{i}.log")
             for i in range(SUPERVISORS * EXECUTORS)]
    wait_until(lambda: client.scard("bench-loop:loop-workers") >= SUPERVISORS * EXECUTORS, 30,
               f"{SUPERVISORS * EXECUTORS} loop workers")
    return procs


def run_fleet(system: str, url: str, env: dict[str, str], home: Path,
              client: redis.Redis) -> dict[str, Any]:
    """Run the fleet for ``system`` (flowkit or loop) on a flushed server; metrics by key."""
    # Its own connection: redis-py's default 5 s socket timeout would cut the blocking waits.
    client = redis.Redis.from_url(url, socket_timeout=TIMEOUT + 10)
    workers = start_workers(system, url, env, home, client)
    drivers: list[subprocess.Popen[bytes]] = []
    try:
        paths = [home / f"fleet-{system}-driver-{i}.json" for i in range(FLEET_DRIVERS)]
        for path in paths:
            path.unlink(missing_ok=True)
        driver = [sys.executable, str(Path(__file__).resolve().parent / "fleet_driver.py"),
                  system, url]
        drivers = [spawn([*driver, str(i), str(FLEET_TASKS), str(paths[i])],
                         {**env, "FLOWKIT_REDIS_URL": url},
                         home / f"fleet-{system}-driver-{i}.log") for i in range(FLEET_DRIVERS)]
        wait_until(lambda: client.llen(f"{KEY}:ready") >= FLEET_DRIVERS, 60, "fleet drivers")
        before = counters(client)
        client.rpush(f"{KEY}:go", *range(FLEET_DRIVERS))
        done = [client.blpop([f"{KEY}:done"], timeout=TIMEOUT) for _ in range(FLEET_DRIVERS)]
        after = counters(client)
        if any(d is None for d in done):
            raise TimeoutError(f"fleet {system}: a driver did not finish within {TIMEOUT} s")
        for i in range(FLEET_DRIVERS):
            client.rpush(f"{KEY}:check:{i}", 1)
        for proc in drivers:
            if proc.wait(timeout=TIMEOUT) != 0:
                raise AssertionError(f"fleet {system}: a driver failed (exit {proc.returncode};"
                                     f" logs in {home})")
        figures = _figures(system, [json.loads(p.read_text()) for p in paths], before, after)
        if system == "flowkit":
            figures["fleet"]["tasks_by_supervisor"] = _spread(client)
        return figures
    finally:
        stop_procs(drivers)
        stop_procs(workers)


def _figures(system: str, reports: list[dict[str, Any]], before: dict[str, int],
             after: dict[str, int]) -> dict[str, Any]:
    """Check both drivers' reports and turn them and the server counters into the rows."""
    if sorted(r["index"] for r in reports) != list(range(FLEET_DRIVERS)) or not all(
            r["ok"] and r["tasks"] == FLEET_TASKS for r in reports):
        raise AssertionError(f"fleet {system}: not every driver got all its results: {reports}")
    tasks = FLEET_TASKS * FLEET_DRIVERS
    window = max(r["t_done"] for r in reports) - min(r["t_submit"] for r in reports)
    cpu_ms = (after["cpu_us"] - before["cpu_us"]) / 1000 / tasks
    return {"fleet_rate": tasks / window, "fleet_cpu": cpu_ms,
            "fleet_ceiling": 1000 / cpu_ms if cpu_ms > 0 else None,
            "fleet_cmds": (after["commands"] - before["commands"]) / tasks,
            "fleet": {"tasks": tasks, "window_s": round(window, 3),
                      "drivers": reports, "workers": f"{SUPERVISORS}x{EXECUTORS}"
                      if system == "flowkit" else str(SUPERVISORS * EXECUTORS)}}


def _spread(client: redis.Redis) -> list[int]:
    """Tasks each flowkit supervisor ran (the registry's counters): all of them took work, and
    together they ran every task the drivers mapped, or the fleet is not the one described."""
    from flowkit.store.workers import list_workers

    done = sorted((int(w.get("tasks_done") or 0) for w in list_workers(client)
                   if QUEUE in w["queues"]), reverse=True)
    if len(done) != SUPERVISORS or min(done) == 0 or sum(done) < FLEET_TASKS * FLEET_DRIVERS:
        raise AssertionError(f"fleet flowkit: tasks by supervisor {done}, expected "
                             f"{SUPERVISORS} supervisors sharing {FLEET_TASKS * FLEET_DRIVERS}")
    return done
