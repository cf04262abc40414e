"""Workloads only flowkit has (RQ and the loop raise NotImplementedError): recovery after a
worker's SIGKILL, cache-hit latency, and the dashboard at 100,000 task runs."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any

from procs import spawn, stop_procs, wait_until
from systems import FlowkitSystem, System

import bench_tasks

RECOVERY_LEASE_SECONDS = 5.0


def w6_recovery(system: System) -> dict[str, Any]:
    """Seconds from SIGKILL of a whole worker (supervisor and executors) running a task to the
    task's result, with a second worker idle and waiting. RQ has no lease: its dead worker's
    job stays 'started' until a maintenance pass past the worker's TTL, so it is not run."""
    if not isinstance(system, FlowkitSystem):
        raise NotImplementedError
    from flowkit.store import task_runs
    from flowkit.store.workers import live_workers_for

    env = {**system.env, "FLOWKIT_LEASE_SECONDS": str(RECOVERY_LEASE_SECONDS),
           "FLOWKIT_HEARTBEAT_SECONDS": "1"}
    cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", "1", "-q", "bench-recovery",
           "--redis-url", system.url, "--name"]
    marker = system.home / "recovery-first-attempt"
    marker.unlink(missing_ok=True)
    doomed = spawn([*cmd, "bench-doomed"], env, system.home / "recovery-doomed.log")
    survivor: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: live_workers_for(system.client, "bench-recovery") >= 1, 20, "worker")
        future = bench_tasks.hang_once_then_pid.submit(str(marker))

        def where() -> list[str | None]:
            run = task_runs.get_task_run(system.client, future.task_run_id) or {}
            return [run.get("state"), run.get("attempt"), run.get("worker")]

        wait_until(lambda: marker.exists() and marker.read_text(), 20, "the first attempt")
        survivor = spawn([*cmd, "bench-survivor"], env, system.home / "recovery-survivor.log")
        wait_until(lambda: live_workers_for(system.client, "bench-recovery") >= 2, 20, "worker 2")
        # The figure must measure a recovery: the first attempt is running on the doomed
        # worker right now (its body hangs until killed).
        at_kill = where()
        if at_kill != ["running", "1", "bench-doomed"]:
            raise AssertionError(f"the task is not running on the doomed worker: {at_kill}")
        first_pid = int(marker.read_text())
        os.killpg(doomed.pid, signal.SIGKILL)
        killed = time.perf_counter()
        pid = future.result(timeout=RECOVERY_LEASE_SECONDS + 30)
        recovered = time.perf_counter() - killed
        after = where()
        if pid == first_pid or after != ["completed", "2", "bench-survivor"]:
            raise AssertionError(f"the result did not come from a second attempt on the other "
                                 f"worker: pid {pid} (first {first_pid}), {after}")
        return {"recovery_s": recovered}
    finally:
        doomed.wait(timeout=5)
        if survivor is not None:
            stop_procs([survivor])


def w7_cache_hit(system: System) -> dict[str, Any]:
    """Latency of a cache hit: submit + result of a call whose result is cached (the first
    call computes it). RQ has no result cache."""
    if not isinstance(system, FlowkitSystem):
        raise NotImplementedError
    from flowkit.states import RunState

    if bench_tasks.cached_noop.submit(7).result(timeout=10) != 7:
        raise AssertionError("cached_noop returned a wrong value")
    latencies = []
    for _ in range(200):
        t0 = time.perf_counter()
        future = bench_tasks.cached_noop.submit(7)
        value = future.result(timeout=10)
        latencies.append((time.perf_counter() - t0) * 1000)
        if value != 7 or future.state is not RunState.CACHED:
            raise AssertionError("expected a cache hit")
    return {"cache_hit_p50": statistics.median(latencies),
            "cache_hit_p99": sorted(latencies)[int(0.99 * len(latencies)) - 1]}


DASHBOARD_TASK_RUNS = 100_000


def w8_dashboard(system: System) -> dict[str, Any]:
    """How fast the dashboard opens a flow run with 100,000 task runs (page HTML and JSON),
    in-process with Starlette's TestClient against the real server: pages read O(page) keys
    because counters are kept at write time. RQ has no dashboard of its own here."""
    if not isinstance(system, FlowkitSystem):
        raise NotImplementedError
    from starlette.testclient import TestClient

    from flowkit._ids import new_id
    from flowkit.dashboard.app import create_app
    from flowkit.settings import Settings
    from flowkit.store import flow_runs, task_runs
    from flowkit.store.limits import Limits

    limits = Limits.from_settings(Settings())
    flow_run_id = new_id()
    flow_runs.create_flow_run(system.client, limits, flow_run_id, "dashboard-scale")
    for start in range(0, DASHBOARD_TASK_RUNS, 5000):
        task_runs.enqueue_task_runs(system.client, limits, [
            task_runs.TaskRunSpec(id=new_id(), flow_run_id=flow_run_id, task_name="cell",
                                  queue="bench-dashboard", envelope=b"-", body=b"",
                                  reply_to="", parameters=f'{{"i": {start + i}}}')
            for i in range(5000)])
    timings: dict[str, list[float]] = {"html": [], "json": []}
    with TestClient(create_app(system.url)) as dash:
        for _ in range(20):
            for kind, path in (("html", f"/runs/{flow_run_id}"),
                               ("json", f"/api/runs/{flow_run_id}")):
                t0 = time.perf_counter()
                response = dash.get(path)
                timings[kind].append(time.perf_counter() - t0)
                if response.status_code != 200:
                    raise AssertionError(f"{path}: HTTP {response.status_code}")
        total = dash.get(f"/api/runs/{flow_run_id}").json()["run"]["task_total"]
    if total != DASHBOARD_TASK_RUNS:
        raise AssertionError(f"the run shows {total} task runs")
    return {"dash_html_p50": statistics.median(timings["html"]),
            "dash_html_max": max(timings["html"]),
            "dash_json_p50": statistics.median(timings["json"])}
