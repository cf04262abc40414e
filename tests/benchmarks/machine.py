"""What the benchmark ran on, the server's counters, and this machine's own yardsticks,
printed beside the table: absolute figures move two- to three-fold between machines, ratios
and yardsticks less."""

from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Any

import redis


def machine_info(client: redis.Redis, binary: str) -> dict[str, Any]:
    import rq

    import flowkit
    server = client.info("server")
    return {"nproc": os.cpu_count(), "cpu_model": cpu_model(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "platform": platform.platform(),
            "server_binary": binary, "server_version": server.get("valkey_version")
            or server.get("redis_version"), "flowkit": flowkit.__version__,
            "rq": rq.__version__, "redis_py": redis.__version__,
            "redis_round_trip_ms_p50": redis_round_trip_ms(client),
            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}


def cpu_model() -> str:
    """The CPU's marketing name (``platform.processor()`` is empty on Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def redis_round_trip_ms(client: redis.Redis, count: int = 500) -> float:
    """This machine's yardstick: the median PING round trip to the benchmark's server (the
    absolute figures above move two- to three-fold between machines; this moves with them)."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        client.ping()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 4)


def counters(client: redis.Redis) -> dict[str, int]:
    """Server-wide totals: commands, read events, server CPU, calls per command."""
    stats = client.info("stats")
    cpu = client.info("cpu")  # the server's own CPU (user + system), in microseconds
    out = {"commands": int(stats["total_commands_processed"]),
           "reads": int(stats["total_reads_processed"]),
           "cpu_us": int((float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])) * 1e6)}
    for name, row in client.info("commandstats").items():
        out[name.removeprefix("cmdstat_")] = int(row["calls"])
    return out
