"""The workloads every system runs, each result checked (a wrong result fails the workload).

W1 2000 no-op tasks, submit to all done (3 runs: median, best); W2 200 sequential submit+result
round trips (p50, p99); W3 200 tasks sleeping 10 ms (wall s, median of 3, ideal 1.0); W4 200
tasks with a 1 MiB bytes argument (median of 3); import time in a fresh interpreter
(perf_counter around the import, best of 5). Redis cost per W1 task: INFO stats/commandstats/cpu
deltas from just before submitting to just after the last completion: total_commands_processed
(Valkey also counts commands run inside Lua - checked on this server), total_reads_processed
(read events = client round trips), FCALL (library) calls, server CPU (user + system).
Background traffic (heartbeats, idle blocking pops) is included; the benchmark's own RQ
completion polls are subtracted.

Add a workload: ``def wN(system: System) -> dict[str, Any]`` (metric values by key; raise
NotImplementedError where a system lacks the feature), append it to WORKLOADS, its rows to
report.METRICS.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from machine import counters
from systems import System

W1_TASKS, W1_RUNS = 2000, 3
REPEATS = 3  # W3 and W4 report the median of this many runs
MAP_TIMEOUT = 60.0


def timed_map(system: System, kind: str, args: list[Any], expected: list[Any],
              between: Callable[[], None] = lambda: None) -> float:
    """Seconds from submitting to the last completion (``between`` runs before the check)."""
    t0 = time.perf_counter()
    fetch = system.run_map(kind, args, MAP_TIMEOUT)
    seconds = time.perf_counter() - t0
    between()
    if fetch() != expected:
        raise AssertionError(f"{system.name} {kind}: wrong results")
    return seconds


def w1_throughput(system: System) -> dict[str, Any]:
    rates: list[float] = []
    cost: dict[str, int] = {}
    polls = 0
    for _ in range(W1_RUNS):
        before, polls0 = counters(system.client), system.polls

        def add_cost(before: dict[str, int] = before) -> None:
            for k, v in counters(system.client).items():
                cost[k] = cost.get(k, 0) + v - before.get(k, 0)

        args = list(range(W1_TASKS))
        rates.append(W1_TASKS / timed_map(system, "noop", args, args, add_cost))
        polls += system.polls - polls0
    n = W1_TASKS * W1_RUNS
    scripts = sum(cost.get(c, 0) for c in ("eval", "evalsha", "eval_ro", "evalsha_ro", "fcall"))
    per_task = {"commands": (cost["commands"] - 2 * polls) / n,
                "server_cpu_ms": cost["cpu_us"] / 1000 / n,
                "read_events": (cost["reads"] - polls) / n, "lua_script_calls": scripts / n}
    top = sorted(((k, v) for k, v in cost.items()
                  if k not in ("commands", "reads", "cpu_us") and v > 0),
                 key=lambda kv: -kv[1])[:12]
    return {"w1_median": statistics.median(rates), "w1_best": max(rates),
            "w1_cmds": per_task["commands"], "w1_reads": per_task["read_events"],
            "w1_lua": per_task["lua_script_calls"], "w1_cpu": per_task["server_cpu_ms"],
            "redis_cost": {"tasks": n, "per_task": per_task, "benchmark_polls_excluded": polls,
                           "calls_per_task_by_command": {k: round(v / n, 3) for k, v in top},
                           "runs_tasks_per_s": [round(r, 1) for r in rates]}}


def w2_latency(system: System) -> dict[str, Any]:
    lat = round_trips_ms(system, 200)
    return {"w2_p50": statistics.median(lat), "w2_p99": lat[math.ceil(0.99 * len(lat)) - 1]}


def round_trips_ms(system: System, count: int) -> list[float]:
    """``count`` sequential submit + result round trips after 10 warm-up ones, sorted, in ms."""
    for i in range(10):
        system.round_trip(i)
    lat: list[float] = []
    for i in range(count):
        t0 = time.perf_counter()
        if system.round_trip(i) != i:
            raise AssertionError("W2: wrong result")
        lat.append((time.perf_counter() - t0) * 1000)
    return sorted(lat)


def w3_sleep(system: System) -> dict[str, Any]:
    runs = [timed_map(system, "sleep10ms", list(range(200)), list(range(200)))
            for _ in range(REPEATS)]
    return {"w3_seconds": statistics.median(runs)}


def w4_bytes(system: System) -> dict[str, Any]:
    payload = os.urandom(1 << 20)  # map() iterates the list: 200 references to one object
    runs = [200 / timed_map(system, "take_bytes", [payload] * 200, [1 << 20] * 200)
            for _ in range(REPEATS)]
    return {"w4_rate": statistics.median(runs)}


def w5_import(system: System) -> dict[str, Any]:
    code = (f"import time; t = time.perf_counter(); import {system.module}; "
            "print(time.perf_counter() - t)")
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True, timeout=30).stdout) for _ in range(5)]
    return {"import_s": min(times)}


#: The workloads every system runs, in order (flowkit's own are in flowkit_only.py).
WORKLOADS: list[Callable[[System], dict[str, Any]]] = [
    w1_throughput, w2_latency, w3_sleep, w4_bytes, w5_import]
