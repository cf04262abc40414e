"""flowkit against plain RQ and a hand-rolled loop: same machine, server and task bodies, one run.

Starts its own Valkey/Redis (flowkit's embedded launcher, loopback, temporary FLOWKIT_HOME),
starts the workers of every system (flowkit, RQ, the loop; disjoint keys) and runs every
workload (workloads.py, flowkit_only.py) on each system in turn, workload by workload, so the
two figures of a ratio are measured seconds apart; then stops them. Then the fleet (fleet.py:
many workers, two driver processes; flowkit and the loop) and every system again through a
proxy adding 1 ms each way (proxied.py). Prints the table (report.py) with ratios flowkit/RQ
and flowkit/loop, the targets of issue 9 and whether flowkit meets them; ``--json`` writes it
all for readme_table.py.
Every figure's results are checked; a failed check is an error and the exit status is 1.

    .venv/bin/python tests/benchmarks/run_bench.py --json bench-results.json [--only w4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from fleet import run_fleet  # noqa: E402
from flowkit_only import w6_recovery, w7_cache_hit, w8_dashboard  # noqa: E402
from hand_loop import LoopSystem  # noqa: E402
from machine import machine_info  # noqa: E402
from procs import describe, stop_server  # noqa: E402
from proxied import run_proxied  # noqa: E402
from report import build_rows, print_table  # noqa: E402
from systems import SECRET, FlowkitSystem, RqSystem, System  # noqa: E402
from workloads import WORKLOADS  # noqa: E402

#: Every system's workloads, then flowkit's own (the others raise NotImplementedError).
ALL_WORKLOADS = [*WORKLOADS, w6_recovery, w7_cache_hit, w8_dashboard]
#: The phases after the per-system workloads, selectable with --only like a workload.
PHASES = ("fleet", "proxy")


def selected(name: str, only: list[str] | None) -> bool:
    return not only or any(name.startswith(prefix) for prefix in only)


def run_systems(systems: list[System], console: Console,
                only: list[str] | None = None) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Every workload on every system, workload by workload (flowkit, RQ, the loop, then the
    next workload), all systems' workers up together on disjoint keys.

    Workload-major order keeps a ratio's two figures seconds apart rather than minutes: this
    box's speed drifts by a quarter within minutes, which moved flowkit/loop ratios across
    their targets between runs when every workload of one system ran before the next system
    started. Idle workers of the other systems cost the server well under 1% of a W1 window
    (a supervisor's duties are about 11 calls a second).
    """
    measured: dict[str, dict[str, Any]] = {system.name: {} for system in systems}
    errors: list[str] = []
    running: list[System] = []
    try:
        for system in systems:
            console.print(f"[bold]{system.name}[/]: starting workers")
            try:
                system.start()
                running.append(system)
            except Exception as exc:  # workers did not start: the other systems still run
                errors.append(f"{system.name} start: {describe(exc)} (logs in FLOWKIT_HOME)")
                console.print(f"[red]{errors[-1]}[/]")
                system.stop()
        for workload in ALL_WORKLOADS:
            if not selected(workload.__name__, only):
                continue
            for system in running:
                t0 = time.monotonic()
                try:
                    measured[system.name].update(workload(system))
                except NotImplementedError:
                    continue
                except Exception as exc:  # report it, keep measuring the rest
                    errors.append(f"{system.name} {workload.__name__}: {describe(exc)}")
                    console.print(f"[red]{errors[-1]}[/]")
                console.print(f"  {system.name} {workload.__name__} done in "
                              f"{time.monotonic() - t0:.1f} s")
    finally:
        for system in running:
            system.stop()
    return measured, errors


def run_phases(url: str, env: dict[str, str], home: Path, client: redis.Redis,
               console: Console, measured: dict[str, dict[str, Any]], machine: dict[str, Any],
               only: list[str] | None) -> list[str]:
    """The fleet and the proxied runs, after the per-system workloads; their errors."""
    errors: list[str] = []
    for name in ("flowkit", "loop") if selected("fleet", only) else ():
        client.flushdb()
        console.print(f"[bold]{name}[/]: fleet")
        t0 = time.monotonic()
        try:
            measured.setdefault(name, {}).update(run_fleet(name, url, env, home, client))
        except Exception as exc:  # report it, keep measuring the rest
            errors.append(f"{name} fleet: {describe(exc)}")
            console.print(f"[red]{errors[-1]}[/]")
        console.print(f"  fleet done in {time.monotonic() - t0:.1f} s")
    if selected("proxy", only):
        try:
            proxied, machine["proxy_round_trip_ms_p50"], errs = run_proxied(
                url, env, home, client, console)
            errors += errs
            for name, figures in proxied.items():
                mine = measured.setdefault(name, {})
                mine.update(figures)
                if mine.get("w1_median"):
                    mine["px_w1_kept"] = figures["px_w1"] / mine["w1_median"]
        except Exception as exc:  # e.g. the proxy did not prove its delay
            errors.append(f"proxy: {describe(exc)}")
            console.print(f"[red]{errors[-1]}[/]")
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--only", action="append", metavar="WORKLOAD",
                        help="run only workloads (or phases: fleet, proxy) whose name starts "
                             "with this (e.g. w4); repeatable")
    args = parser.parse_args()
    console = Console() if sys.stdout.isatty() else Console(width=180)
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
            if any(selected(w.__name__, args.only) for w in ALL_WORKLOADS):
                client.flushdb()
                classes: list[type[System]] = [FlowkitSystem, RqSystem, LoopSystem]
                measured, errors = run_systems(
                    [cls(info.url(), env, home, client) for cls in classes], console, args.only)
            errors += run_phases(info.url(), env, home, client, console, measured, machine,
                                 args.only)
            client.flushdb()
            machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        finally:
            stop_server(info.pid)
    print_table(console, rows := build_rows(measured), machine)
    if args.json:
        extra = {key: {name: m.get(key) for name, m in measured.items() if m.get(key)}
                 for key in ("redis_cost", "fleet")}
        args.json.write_text(json.dumps({"machine": machine, "results": rows, **extra,
                                         "errors": errors}, indent=2))
        console.print(f"wrote {args.json}")
    for err in errors:
        console.print(f"[red]error: {err}[/]")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
