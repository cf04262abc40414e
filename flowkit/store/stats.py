"""Queues and their statistics (counters kept by the library at every transition).

Heartbeats and the per-minute counters are stamped with the server's clock, so they are
read against it too (a dashboard host whose clock is off would count no live workers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowkit.store import keys
from flowkit.store._codec import decode
from flowkit.store.clock import server_time
from flowkit.store.connection import call
from flowkit.store.workers import WORKER_STALE_SECONDS

if TYPE_CHECKING:
    import redis


def list_queues(client: redis.Redis) -> list[dict[str, Any]]:
    """Every known queue with its depth and live worker count."""
    names = sorted(keys.queue_name(k.decode())
                   for k in call(client, client.smembers, keys.RQ_QUEUES))
    cutoff = server_time(client) - WORKER_STALE_SECONDS
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(keys.queue(name))
        pipe.zcount(keys.queue_workers(name), cutoff, "+inf")
    replies = call(client, pipe.execute)
    return [{"name": name, "depth": int(replies[2 * i]), "workers": int(replies[2 * i + 1])}
            for i, name in enumerate(names)]


def queue_throughput(client: redis.Redis, names: list[str], minutes: int = 15
                     ) -> dict[str, dict[str, Any]]:
    """Per queue: running attempts and task runs finished per minute over the last minutes."""
    now_minute = int(server_time(client) // 60)
    window = range(now_minute - minutes + 1, now_minute + 1)
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hgetall(keys.queue_stats(name))
    out: dict[str, dict[str, Any]] = {}
    for name, raw in zip(names, call(client, pipe.execute)):
        stats = decode(raw)
        out[name] = {"running": max(0, int(stats.get("running", 0))),
                     "done_per_minute": [int(stats.get(f"done:{m}", 0)) for m in window],
                     "failed_per_minute": [int(stats.get(f"failed:{m}", 0)) for m in window]}
    return out
