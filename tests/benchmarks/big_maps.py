"""Big maps from one driver (issue 9): how soon ``map()`` returns, how soon all is queued, what
the driver holds per pending future, and whether a 1,000,000-task map completes.

Starts its own Valkey/Redis (flowkit's embedded launcher, loopback, temporary FLOWKIT_HOME) and
one ``flowkit worker start -c 2`` per size, then maps ``bench_tasks.noop`` over ``range(n)``:

- ``map_return_s``: wall time of the ``map()`` call itself.
- ``all_queued_s``: from calling ``map()`` until the map's flow run counts ``n`` task runs (read
  through the store API, every 20 ms).
- ``rss_per_future_b``: driver RSS growth from just before ``map()`` to the moment everything is
  queued, divided by ``n`` (a bound: freed memory the allocator keeps counts too).
- ``peak_rss_mb``: the driver's peak RSS (VmHWM) at the end; ``redis_peak_mb``: the highest
  ``used_memory`` sampled every 0.5 s while the map ran.
- ``total_s``: from calling ``map()`` until every future is done; then every result is checked.
- ``redis_b_per_run``: Redis ``used_memory`` growth from just before ``map()`` until every run
  finished, divided by ``n``: what a finished no-op task run costs with its full history
  (``keep="full"``) or as a summary (``keep="summary"``: counters, and failures only).

``--profile`` also runs cProfile around one 100,000-task ``map()`` call (workers stopped, so it
measures submission only) and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from procs import spawn, stop_procs, stop_server, wait_until  # noqa: E402

import bench_tasks  # noqa: E402  (importing flowkit reads no settings, opens no connection)

SECRET = "flowkit-bench-secret-0123456789ab"
QUEUE = "bench"
SIZES = (100_000, 1_000_000)


def _rss_bytes(field: str = "VmRSS") -> int:
    """This process's resident memory (or its peak, ``VmHWM``) from /proc."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class _RedisMemory:
    """Samples ``used_memory`` in a thread; ``peak`` is the highest value seen."""

    def __init__(self, client: redis.Redis) -> None:
        self.client, self.peak, self._stop = client, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _RedisMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, int(self.client.info("memory")["used_memory"]))
            if self._stop.wait(0.5):
                return


def _queued(client: redis.Redis, flow_run_id: str) -> int:
    from flowkit.store import flow_runs

    run = flow_runs.get_flow_run(client, flow_run_id)
    return int(run.get("n_total") or 0) if run else 0


def measure_big_maps(redis_url: str, workers_env: dict[str, str], size: int,
                     home: Path, keep: str = "full") -> dict[str, Any]:
    """Start 2 local workers, map ``size`` no-op tasks, wait for all; the figures above."""
    import flowkit
    from flowkit.driver import get_driver, reset_driver
    from flowkit.store.workers import live_workers_for

    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", "2", "-q", QUEUE,
           "--redis-url", redis_url]
    workers = [spawn(cmd, workers_env, home / f"worker-{size}.log")]
    try:
        wait_until(lambda: live_workers_for(client, QUEUE) >= 1, 30, "the flowkit worker")
        get_driver()  # connect outside the measured window
        assert [f.result(timeout=60) for f in bench_tasks.noop.map(range(20))] == list(range(20))
        values = range(size)
        task = bench_tasks.noop.with_options(keep=keep)
        with _RedisMemory(client) as memory:
            used_before = int(client.info("memory")["used_memory"])
            rss_before = _rss_bytes()
            started = time.perf_counter()
            futures = task.map(values)
            returned = time.perf_counter()
            flow_run_id = futures[0].flow_run_id
            wait_until(lambda: _queued(client, flow_run_id) >= size, 600, "all queued")
            queued = time.perf_counter()
            rss_queued = _rss_bytes()
            flowkit.wait(futures)
            finished = time.perf_counter()
        wrong = sum(1 for i, f in enumerate(futures) if f.result() != i)
        if wrong:
            raise AssertionError(f"{wrong} of {size} results were wrong")
        _check_records(client, flow_run_id, size, keep)
        used_after = int(client.info("memory")["used_memory"])
        return {"size": size, "keep": keep, "map_return_s": returned - started,
                "redis_b_per_run": (used_after - used_before) / size,
                "all_queued_s": queued - started,
                "rss_per_future_b": (rss_queued - rss_before) / size,
                "total_s": finished - started, "peak_rss_mb": _rss_bytes("VmHWM") / 2**20,
                "redis_peak_mb": memory.peak / 2**20}
    finally:
        reset_driver()
        stop_procs(workers)


def _check_records(client: redis.Redis, flow_run_id: str, size: int, keep: str) -> None:
    """The figure is what it claims: all runs counted completed, and records kept as asked
    (every one with its history for "full", none for "summary")."""
    from flowkit.store import flow_runs, keys, task_runs

    run = flow_runs.get_flow_run(client, flow_run_id) or {}
    if int(run.get("n_completed") or 0) != size:
        raise AssertionError(f"the flow run counts {run.get('n_completed')} completed, not {size}")
    sample = [i.decode() for i in client.lrange(keys.flow_run_tasks(flow_run_id), 0, 99)]
    kept = sum(client.exists(keys.task_run(i)) for i in sample)
    if keep == "summary" and kept:
        raise AssertionError(f"keep='summary' kept {kept} of 100 sampled records")
    if keep == "full" and (kept != len(sample) or any(
            len(task_runs.get_history(client, i)) != 2 for i in sample)):
        raise AssertionError("keep='full' lost records or history entries")


def profile_map(size: int = 100_000, top: int = 25) -> str:
    """cProfile of one ``map()`` call (no worker: submission only); the hottest functions."""
    from flowkit.driver import get_driver, reset_driver

    get_driver()
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    futures = bench_tasks.noop.map(range(size))
    profiler.disable()
    took = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    get_driver().submissions.stop(None, "benchmark")  # what is not queued yet never will be
    cancelled = get_driver().cancel_task_runs([f.task_run_id for f in futures], "benchmark")
    reset_driver()
    return f"map() of {size} under cProfile: {took:.2f} s (cancelled {cancelled})\n" + \
        out.getvalue()


def _print_table(rows: list[dict[str, Any]]) -> None:
    columns = ("size", "keep", "map_return_s", "all_queued_s", "rss_per_future_b", "total_s",
               "peak_rss_mb", "redis_peak_mb", "redis_b_per_run")
    print(" | ".join(f"{c:>16}" for c in columns))
    for row in rows:
        print(" | ".join(f"{row[c]:>16,.0f}" if c == "size" else f"{row[c]:>16}" if c == "keep"
                         else f"{row[c]:>16.2f}" for c in columns))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=Path("big_maps.json"),
                        help="write the results here as JSON (default: %(default)s)")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--keep", nargs="+", default=["full", "summary"],
                        choices=["full", "summary"], help="what Redis keeps of each run")
    parser.add_argument("--profile", action="store_true", help="also profile a map() call")
    args = parser.parse_args()
    from flowkit.embedded import free_port, start_server

    rows: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    loadavg_start = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="flowkit-bigmap-", ignore_cleanup_errors=True) as tmp:
        info = start_server(Path(tmp), port=free_port(), detach=False, record=False)
        try:
            os.environ.update(FLOWKIT_REDIS_URL=info.url(), FLOWKIT_HOME=tmp,
                              FLOWKIT_SECRET_KEY=SECRET, FLOWKIT_ECHO_LOGS="0")
            path = os.pathsep.join(p for p in (str(BENCH_DIR), os.environ.get("PYTHONPATH")) if p)
            env = {**os.environ, "PYTHONPATH": path}
            if args.profile:
                report["profile"] = profile_map()
                print(report["profile"])
            for size in args.sizes:
                for keep in args.keep:
                    rows.append(measure_big_maps(info.url(), env, size, Path(tmp), keep))
                    _print_table(rows)
        finally:
            stop_server(info.pid)
    report["results"] = rows
    report["machine"] = {"nproc": os.cpu_count(), "loadavg_start": loadavg_start}
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
