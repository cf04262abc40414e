"""W1 and W2 through a proxy that adds 1 ms each way: the latency users feel off loopback.

Workers AND drivers of every system talk to the server through latency_proxy.py (its own
process). The proxy's delay is proved first: PING p50 through it must be at least 2 ms, or the
benchmark fails. Designs that pay a round trip per step lose about 10x here; batching ones keep
most of their loopback throughput, reported as the share kept (proxied W1 / loopback W1).
RQ's per-job path makes ~20 round trips, so its W1 runs PROXY_RQ_TASKS tasks, not W1_TASKS.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import latency_proxy
import redis
from hand_loop import LoopSystem
from machine import redis_round_trip_ms
from procs import describe
from rich.console import Console
from systems import FlowkitSystem, RqSystem, System
from workloads import W1_RUNS, W1_TASKS, round_trips_ms, timed_map

#: Milliseconds the proxy adds to each direction, and the least PING p50 that proves it.
DELAY_MS, LEAST_PING_MS = 1.0, 2.0
PROXY_RQ_TASKS = 200
PROXY_ROUND_TRIPS = 100


def proxied_url(url: str, port: int) -> str:
    """``url`` with its port replaced by the proxy's (password and db kept)."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{port}" if auth
                                     else f"127.0.0.1:{port}"))


def measure(system: System) -> dict[str, Any]:
    """Proxied W1 (median of W1_RUNS) and W2 (p50) on a started system."""
    tasks = PROXY_RQ_TASKS if isinstance(system, RqSystem) else W1_TASKS
    args = list(range(tasks))
    rates = [tasks / timed_map(system, "noop", args, args) for _ in range(W1_RUNS)]
    lat = round_trips_ms(system, PROXY_ROUND_TRIPS)
    return {"px_w1": statistics.median(rates), "px_w2_p50": statistics.median(lat),
            "px_w2_p99": lat[-1 - len(lat) // 100], "px_w1_tasks": tasks}


def run_proxied(url: str, env: dict[str, str], home: Path, client: redis.Redis,
                console: Console) -> tuple[dict[str, dict[str, Any]], float, list[str]]:
    """Every system through the proxy: metrics by system, the proxied PING p50, errors."""
    server = urlsplit(url)
    proc, port = latency_proxy.start(server.hostname or "127.0.0.1", server.port or 6379,
                                     DELAY_MS, home / "latency-proxy.log")
    measured: dict[str, dict[str, Any]] = {}
    errors: list[str] = []
    try:
        purl = proxied_url(url, port)
        pclient = redis.Redis.from_url(purl)
        ping = redis_round_trip_ms(pclient, 200)
        console.print(f"latency proxy: PING p50 {ping:.3f} ms through it")
        if ping < LEAST_PING_MS:
            raise RuntimeError(f"the proxy adds too little delay: PING p50 {ping:.3f} ms < "
                               f"{LEAST_PING_MS} ms, its figures would not measure latency")
        for cls in (FlowkitSystem, RqSystem, LoopSystem):
            client.flushdb()
            system: System = cls(purl, {**env, "FLOWKIT_REDIS_URL": purl}, home, pclient)
            console.print(f"[bold]{system.name}[/] through the proxy: starting workers")
            try:
                system.start()
                measured[system.name] = measure(system)
            except Exception as exc:  # report it, measure the other systems
                errors.append(f"{system.name} through the proxy: {describe(exc)}")
                console.print(f"[red]{errors[-1]}[/]")
            finally:
                system.stop()
        return measured, ping, errors
    finally:
        proc.kill()
        proc.wait(timeout=5)
