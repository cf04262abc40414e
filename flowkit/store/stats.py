"""Queues and their statistics (counters kept by the library at every transition)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flowkit.store import keys
from flowkit.store._codec import decode
from flowkit.store.connection import call
from flowkit.store.workers import WORKER_STALE_SECONDS

if TYPE_CHECKING:
    import redis


def list_queues(client: redis.Redis) -> list[dict[str, Any]]:
    """Every known queue with its depth and live worker count."""
    names = sorted(keys.queue_name(k.decode())
                   for k in call(client, client.smembers, keys.RQ_QUEUES))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(keys.queue(name))
        pipe.zcount(keys.queue_workers(name), time.time() - WORKER_STALE_SECONDS, "+inf")
    replies = call(client, pipe.execute)
    return [{"name": name, "depth": int(replies[2 * i]), "workers": int(replies[2 * i + 1])}
            for i, name in enumerate(names)]


def queue_throughput(client: redis.Redis, names: list[str], minutes: int = 15
                     ) -> dict[str, dict[str, Any]]:
    """Per queue: running attempts and task runs finished per minute over the last minutes."""
    now_minute = int(time.time() // 60)
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
