"""flowkit against plain RQ: same machine, server and task bodies, one run, ratios flowkit/RQ.

Starts its own Valkey/Redis (flowkit's embedded launcher, loopback, temporary FLOWKIT_HOME), then
per system (flowkit, FLUSHDB, RQ) starts its workers, runs every workload, stops them.
flowkit: one ``flowkit worker start -c 2`` (2 executor processes), driven by ``Task.map``/
``submit`` and ``flowkit.wait``. RQ: two ``rq worker -w rq.worker.SimpleWorker --quiet`` (no fork
and no log line per job), driven by ``Queue.enqueue_many`` plus polling of the finished/failed
registries every 10 ms (RQ has no batch wait), and ``Job.latest_result(timeout)`` (blocking XREAD).

Workloads, every result checked: W1 2000 no-op tasks, submit to all done (3 runs: median,
best); W2 200 sequential submit+result round trips (p50, p99); W3 200 tasks sleeping 10 ms (wall
s, median of 3, ideal 1.0); W4 200 tasks with a 1 MiB bytes argument (median of 3); import time
in a fresh interpreter (perf_counter around the import, best of 5). Redis cost per W1 task:
INFO stats/commandstats deltas from just before submitting to just after the last completion:
total_commands_processed (Valkey also counts commands run inside Lua - checked on this server),
total_reads_processed (read events = client round trips), FCALL (library) calls. Background
traffic (heartbeats, idle blocking pops) is included; the benchmark's own RQ completion polls are
subtracted.

Add a workload: ``def wN(system: System) -> dict[str, Any]`` (metric values by key; raise
NotImplementedError where a system lacks the feature), append it to WORKLOADS, its rows to METRICS.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import redis
from rich.console import Console
from rich.table import Table

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from hand_loop import LoopSystem  # noqa: E402
from machine import counters, machine_info  # noqa: E402
from procs import spawn, stop_procs, wait_until  # noqa: E402

import bench_tasks  # noqa: E402  (importing flowkit reads no settings, opens no connection)

SECRET = "flowkit-bench-secret-0123456789ab"  # 32 characters
QUEUE = "bench"
W1_TASKS, W1_RUNS = 2000, 3
REPEATS = 3  # W3 and W4 report the median of this many runs
MAP_TIMEOUT = 60.0


class System(Protocol):
    name: str
    module: str
    client: redis.Redis
    polls: int  # completion polls the benchmark itself sent (1 read, 2 commands each)

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        """Submit one task per arg, return once all are done; the callable fetches results."""
        ...
    def round_trip(self, x: int) -> Any: ...


class _Base:
    def __init__(self, url: str, env: dict[str, str], home: Path, client: redis.Redis) -> None:
        self.url, self.env, self.home, self.client, self.polls = url, env, home, client, 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def stop(self) -> None:
        stop_procs(self.procs)


class FlowkitSystem(_Base):
    name, module = "flowkit", "flowkit"
    tasks: dict[str, Any] = {"noop": bench_tasks.noop, "sleep10ms": bench_tasks.sleep10ms,
                            "take_bytes": bench_tasks.take_bytes}

    def start(self) -> None:
        from flowkit.store.workers import live_workers_for

        cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", "2", "-q", QUEUE,
               "--redis-url", self.url]
        self.procs.append(spawn(cmd, self.env, self.home / "flowkit-worker.log"))
        wait_until(lambda: live_workers_for(self.client, QUEUE) >= 1, 20, "the flowkit worker")
        self.run_map("noop", list(range(50)), 30)()  # warm-up: runtime, listener, workers

    def stop(self) -> None:
        from flowkit.driver import reset_driver

        reset_driver()
        super().stop()

    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        import flowkit

        futures = self.tasks[kind].map(args)
        if flowkit.wait(futures, timeout=timeout).not_done:
            raise TimeoutError(f"flowkit {kind}: unfinished after {timeout} s")
        return lambda: [f.result(timeout=5) for f in futures]

    def round_trip(self, x: int) -> Any:
        return self.tasks["noop"].submit(x).result(timeout=10)


class RqSystem(_Base):
    name, module = "RQ", "rq"

    def start(self) -> None:
        from rq import Queue, Worker

        self.queue = Queue(QUEUE, connection=self.client)

        cmd = [sys.executable, "-m", "rq.cli", "worker", "--worker-class",
               "rq.worker.SimpleWorker", "--url", self.url, "--quiet", QUEUE]
        self.procs = [spawn(cmd, self.env, self.home / f"rq-worker-{i}.log") for i in range(2)]
        wait_until(lambda: Worker.count(queue=self.queue) >= 2, 20, "2 RQ workers")
        self.run_map("noop", list(range(50)), 30)()

    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        from rq import Queue

        fn = getattr(bench_tasks, "rq_" + kind)
        finished = self.queue.finished_job_registry.key
        failed = self.queue.failed_job_registry.key
        done0, failed0 = self.client.zcard(finished), self.client.zcard(failed)
        jobs = self.queue.enqueue_many([Queue.prepare_data(fn, (a,)) for a in args])
        deadline = time.monotonic() + timeout
        while True:
            self.polls += 1
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(finished)
            pipe.zcard(failed)
            done, bad = pipe.execute()
            if bad > failed0:
                raise RuntimeError(f"RQ {kind}: {bad - failed0} job(s) failed")
            if done - done0 >= len(jobs):
                return lambda: [job.return_value() for job in jobs]
            if time.monotonic() > deadline:
                raise TimeoutError(f"RQ {kind}: unfinished after {timeout} s")
            time.sleep(0.01)

    def round_trip(self, x: int) -> Any:
        result = self.queue.enqueue(bench_tasks.rq_noop, x).latest_result(timeout=10)
        if result is None or result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ round trip {x}: no successful result within 10 s")
        return result.return_value


# -- workloads ------------------------------------------------------------------------------
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
    for i in range(10):
        system.round_trip(i)
    lat: list[float] = []
    for i in range(200):
        t0 = time.perf_counter()
        if system.round_trip(i) != i:
            raise AssertionError("W2: wrong result")
        lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    return {"w2_p50": statistics.median(lat), "w2_p99": lat[math.ceil(0.99 * len(lat)) - 1]}


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


RECOVERY_LEASE_SECONDS = 5.0


def w6_recovery(system: System) -> dict[str, Any]:
    """Seconds from SIGKILL of a whole worker (supervisor and executors) running a task to the
    task's result, with a second worker idle and waiting. RQ has no lease: its dead worker's
    job stays 'started' until a maintenance pass past the worker's TTL, so it is not run."""
    if not isinstance(system, FlowkitSystem):
        raise NotImplementedError
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
        key = f"flowkit:taskrun:{future.task_run_id}"
        wait_until(lambda: marker.exists() and marker.read_text(), 20, "the first attempt")
        survivor = spawn([*cmd, "bench-survivor"], env, system.home / "recovery-survivor.log")
        wait_until(lambda: live_workers_for(system.client, "bench-recovery") >= 2, 20, "worker 2")
        # The figure must measure a recovery: the first attempt is running on the doomed
        # worker right now (its body hangs until killed).
        at_kill = system.client.hmget(key, "state", "attempt", "worker")
        if at_kill != [b"running", b"1", b"bench-doomed"]:
            raise AssertionError(f"the task is not running on the doomed worker: {at_kill}")
        first_pid = int(marker.read_text())
        os.killpg(doomed.pid, signal.SIGKILL)
        killed = time.perf_counter()
        pid = future.result(timeout=RECOVERY_LEASE_SECONDS + 30)
        recovered = time.perf_counter() - killed
        after = system.client.hmget(key, "state", "attempt", "worker")
        if pid == first_pid or after != [b"completed", b"2", b"bench-survivor"]:
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


WORKLOADS: list[Callable[[System], dict[str, Any]]] = [
    w1_throughput, w2_latency, w3_sleep, w4_bytes, w5_import, w6_recovery, w7_cache_hit,
    w8_dashboard]


@dataclass(frozen=True)
class Metric:
    key: str
    workload: str
    unit: str
    higher_is_better: bool
    target: float | None = None


METRICS = [
    Metric("w1_median", "W1 map 2000 noop, median of 3", "tasks/s", True, 4000),
    Metric("w1_best", "W1 map 2000 noop, best of 3", "tasks/s", True, 4000),
    Metric("w2_p50", "W2 200 sequential round trips, p50", "ms", False, 2.0),
    Metric("w2_p99", "W2 200 sequential round trips, p99", "ms", False),
    Metric("w3_seconds", "W3 200 x sleep 10 ms (ideal 1.0), median of 3", "s", False, 1.1),
    Metric("w4_rate", "W4 200 tasks x 1 MiB argument, median of 3", "tasks/s", True, 300),
    Metric("import_s", "import time, best of 5", "s", False, 0.3),
    Metric("cache_hit_p50", "cache hit, submit + result, p50", "ms", False, 1.0),
    Metric("cache_hit_p99", "cache hit, submit + result, p99", "ms", False),
    Metric("dash_html_p50", "dashboard: run page with 100k task runs, p50", "s", False, 0.3),
    Metric("dash_html_max", "dashboard: run page with 100k task runs, max of 20", "s", False,
           0.3),
    Metric("dash_json_p50", "dashboard: /api/runs/{id} with 100k task runs, p50", "s", False,
           0.3),
    Metric("recovery_s", f"recovery after worker SIGKILL (lease {RECOVERY_LEASE_SECONDS:g} s)",
           "s", False, RECOVERY_LEASE_SECONDS + 2),
    Metric("w1_cmds", "W1 Redis commands/task (incl. in Lua)", "cmds", False),
    Metric("w1_reads", "W1 Redis read events/task (round trips)", "reads", False),
    Metric("w1_lua", "W1 Lua script calls/task", "calls", False),
    Metric("w1_cpu", "W1 Redis server CPU/task (INFO cpu)", "ms", False),
]


def run_system(system: System, console: Console,
               only: list[str] | None = None) -> tuple[dict[str, Any], list[str]]:
    measured: dict[str, Any] = {}
    errors: list[str] = []
    console.print(f"[bold]{system.name}[/]: starting workers")
    try:
        system.start()
        for workload in WORKLOADS:
            if only and not any(workload.__name__.startswith(name) for name in only):
                continue
            t0 = time.monotonic()
            try:
                measured.update(workload(system))
            except NotImplementedError:
                continue
            except Exception as exc:  # report it, keep measuring the rest
                errors.append(f"{system.name} {workload.__name__}: {exc!r}")
                console.print(f"[red]{errors[-1]}[/]")
            console.print(f"  {workload.__name__} done in {time.monotonic() - t0:.1f} s")
    except Exception as exc:  # workers did not start: the other system still runs
        errors.append(f"{system.name} start: {exc!r} (logs in FLOWKIT_HOME)")
        console.print(f"[red]{errors[-1]}[/]")
    finally:
        system.stop()
    return measured, errors


def build_rows(measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for m in METRICS:
        fk, rqv = measured["flowkit"].get(m.key), measured["RQ"].get(m.key)
        loop = measured.get("loop", {}).get(m.key)
        meets = None
        if m.target is not None and fk is not None:
            meets = fk >= m.target if m.higher_is_better else fk <= m.target
        rows.append({"workload": m.workload, "metric": m.key, "unit": m.unit,
                     "better": "higher" if m.higher_is_better else "lower", "flowkit": fk,
                     "rq": rqv, "ratio": fk / rqv if fk is not None and rqv else None,
                     "loop": loop, "ratio_loop": fk / loop if fk is not None and loop else None,
                     "target": m.target, "meets_target": meets})
    return rows


def print_table(console: Console, rows: list[dict[str, Any]]) -> None:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"

    def ratio(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3g}x"

    table = Table(title="flowkit vs RQ and vs a hand-rolled BRPOP/LPUSH loop that records "
                        "nothing (ratios = flowkit/baseline; see 'better' for direction)")
    for col in ("workload", "unit", "flowkit", "RQ", "flowkit/RQ", "loop", "flowkit/loop",
                "better", "target", "meets"):
        table.add_column(col, justify="left" if col == "workload" else "right")
    for r in rows:
        sign = "≥" if r["better"] == "higher" else "≤"
        meets = {None: "-", True: "[green]yes[/]", False: "[red]no[/]"}[r["meets_target"]]
        table.add_row(r["workload"], r["unit"], fmt(r["flowkit"]), fmt(r["rq"]),
                      ratio(r["ratio"]), fmt(r["loop"]), ratio(r["ratio_loop"]), r["better"],
                      "-" if r["target"] is None else f"{sign} {r['target']:g}", meets)
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help="run only workloads whose name starts with this (e.g. w4); "
                             "repeatable")
    args = parser.parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=160)
    from flowkit.embedded import free_port, start_server

    with tempfile.TemporaryDirectory(prefix="flowkit-bench-", ignore_cleanup_errors=True) as tmp:
        home = Path(tmp)
        info = start_server(home, port=free_port(), detach=False, record=False)
        measured: dict[str, dict[str, Any]] = {}
        errors: list[str] = []
        try:
            os.environ.update(FLOWKIT_REDIS_URL=info.url(), FLOWKIT_HOME=tmp,
                              FLOWKIT_SECRET_KEY=SECRET, FLOWKIT_ECHO_LOGS="0")
            path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONPATH": path}
            client = redis.Redis.from_url(info.url())
            machine = machine_info(client, info.binary)
            console.print("machine: " + ", ".join(f"{k}={v}" for k, v in machine.items()))
            for cls in (FlowkitSystem, RqSystem, LoopSystem):
                client.flushdb()
                system = cls(info.url(), env, home, client)
                measured[system.name], errs = run_system(system, console, args.only)
                errors += errs
            client.flushdb()
            machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            os.kill(info.pid, signal.SIGTERM)
            try:
                wait_until(lambda: os.waitpid(info.pid, os.WNOHANG)[0] != 0, 10, "server exit")
            except (ChildProcessError, TimeoutError):
                pass
    print_table(console, rows := build_rows(measured))
    if args.json:
        cost = {name: m.get("redis_cost") for name, m in measured.items()}
        args.json.write_text(json.dumps({"machine": machine, "results": rows,
                                         "redis_cost": cost, "errors": errors}, indent=2))
        console.print(f"wrote {args.json}")
    for err in errors:
        console.print(f"[red]error: {err}[/]")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
