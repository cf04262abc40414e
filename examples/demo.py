"""The flowkit demo: a traffic report computed by fanning tasks out to local workers.

Run it with `make demo` (or `python examples/demo.py`). With no FLOWKIT_REDIS_URL set,
flowkit starts its embedded server under ~/.flowkit and local worker processes; nothing leaves
this machine. The log data is generated deterministically inside the tasks.
"""

from __future__ import annotations

import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from flowkit import flow, get_run_logger, task
from flowkit.context import flow_run_ctx
from flowkit.embedded import running_server
from flowkit.settings import get_settings

PATHS = ["/", "/login", "/search", "/cart", "/checkout", "/api/items", "/api/user", "/health"]


@task
def generate_shard(day: int, shard: int, lines: int = 5000) -> list[tuple[str, int, float]]:
    """Synthetic access-log lines of one shard of one day: (path, status, latency ms)."""
    rng = random.Random(day * 1000 + shard)
    error_rate = 0.01 + 0.04 * (day % 3 == 2)  # every third day has a bad deploy
    return [(rng.choice(PATHS), 500 if rng.random() < error_rate else 200,
             rng.lognormvariate(3.0 + 0.1 * day, 0.5)) for _ in range(lines)]


@task
def summarize(day: int, rows: list[tuple[str, int, float]]) -> dict[str, object]:
    """Counts, error rate and latency percentiles of one shard."""
    latencies = sorted(r[2] for r in rows)
    return {"day": day, "requests": len(rows), "errors": sum(r[1] >= 500 for r in rows),
            "p95": latencies[int(0.95 * (len(latencies) - 1))],
            "paths": Counter(r[0] for r in rows), "pid": os.getpid()}


@task(log_prints=True)
def merge_day(day: int, shards: list[dict[str, object]]) -> dict[str, object]:
    """One day's report from its shard summaries."""
    paths: Counter[str] = Counter()
    for s in shards:
        paths.update(s["paths"])  # type: ignore[arg-type]
    requests = sum(int(s["requests"]) for s in shards)  # type: ignore[call-overload]
    errors = sum(int(s["errors"]) for s in shards)  # type: ignore[call-overload]
    report = {"day": day, "requests": requests, "error_rate": errors / requests,
              "p95_ms": statistics.median(float(s["p95"]) for s in shards),  # type: ignore[arg-type]
              "top_path": paths.most_common(1)[0][0],
              "pids": sorted({int(s["pid"]) for s in shards})}  # type: ignore[call-overload]
    if report["error_rate"] > 0.03:
        print(f"day {day}: error rate {report['error_rate']:.1%} is above the 3% budget")
    return report


#: The id of the flow run this demo made (shown at the end, to look it up).
RUN_IDS: list[str] = []


@flow(log_prints=True)
def traffic_report(days: int = 7, shards_per_day: int = 8) -> list[dict[str, object]]:
    """Generate, summarize and merge a week of logs: 7 x 8 shards fan out to workers."""
    run = flow_run_ctx.get()
    if run is not None:
        RUN_IDS.append(run.flow_run_id)
    logger = get_run_logger()
    logger.info("building the report for %d days x %d shards", days, shards_per_day)
    reports = []
    for day in range(days):
        shards = generate_shard.map([day] * shards_per_day, range(shards_per_day))
        summaries = [summarize.submit(day, rows) for rows in shards]  # futures as inputs
        reports.append(merge_day.submit(day, summaries))
    return [r.result() for r in reports]


def main() -> None:
    console = Console()
    started = time.perf_counter()
    reports = traffic_report(days=7, shards_per_day=8)
    elapsed = time.perf_counter() - started
    table = Table(title="Traffic report (computed on flowkit workers)")
    for column in ("day", "requests", "error rate", "p95 latency", "top path", "executors"):
        table.add_column(column, justify="right" if column != "top path" else "left")
    for r in reports:
        rate = float(r["error_rate"])  # type: ignore[arg-type]
        table.add_row(str(r["day"]), f"{r['requests']:,}",
                      f"[{'red' if rate > 0.03 else 'green'}]{rate:.2%}[/]",
                      f"{float(r['p95_ms']):.1f} ms", str(r["top_path"]),  # type: ignore[arg-type]
                      ",".join(map(str, r["pids"])))  # type: ignore[call-overload]
    console.print(table)
    pids = {p for r in reports for p in r["pids"]}  # type: ignore[attr-defined]
    console.print(f"{7 * 8 * 2 + 7} task runs on {len(pids)} executor processes in "
                  f"{elapsed:.2f} s.")
    _next_steps(console, RUN_IDS[-1] if RUN_IDS else "<id>")


def _next_steps(console: Console, run_id: str) -> None:
    """Where to look next, and how to stop what the demo left running."""
    cli = os.path.relpath(Path(sys.executable).parent / "flowkit")
    server = running_server(get_settings().home) if not os.environ.get("FLOWKIT_REDIS_URL") \
        else None
    lines = [f"\nFlow run [bold]{run_id}[/bold]:",
             f"  {cli} run show {run_id}    its task runs: states, attempts, workers",
             f"  {cli} run logs {run_id}    its log",
             f"  {cli} dashboard start           then open "
             f"http://127.0.0.1:4200/runs/{run_id}"]
    if server is not None:
        lines += [f"The embedded server (pid {server.pid}, port {server.port}, data in "
                  f"{get_settings().home}) keeps running in the background for the dashboard "
                  "and the next run:",
                  f"  {cli} server stop               stops it"]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False)

if __name__ == "__main__":
    main()
