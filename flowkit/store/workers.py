"""The worker registry: who serves which queue, and since when (plain writes: no run state)."""

from __future__ import annotations

import json
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from flowkit.store import keys
from flowkit.store._codec import decode
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

#: A worker whose heartbeat is older than this many seconds is treated as gone.
WORKER_STALE_SECONDS = 15.0
#: A stopped worker's hash (and its counters) stays this long.
WORKER_KEEP_SECONDS = 24 * 3600


def register_worker(client: redis.Redis, worker_id: str, queues: list[str], concurrency: int,
                    version: str) -> None:
    """Announce a worker and the queues it serves."""
    now = time.time()
    call(client, client.hset, keys.worker(worker_id), mapping={
        "id": worker_id, "host": socket.gethostname(), "pid": os.getpid(),
        "queues": json.dumps(queues), "concurrency": concurrency, "started": now,
        "heartbeat": now, "version": version, "busy": 0, "state": "running",
        "tasks_done": 0, "tasks_failed": 0})
    heartbeat(client, worker_id, queues, busy=0)


def heartbeat(client: redis.Redis, worker_id: str, queues: list[str], busy: int) -> None:
    """Refresh a worker's liveness in the registry and in each queue it serves."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.worker(worker_id), mapping={"heartbeat": now, "busy": busy})
    pipe.expire(keys.worker(worker_id), WORKER_KEEP_SECONDS)
    pipe.zadd(keys.WORKERS, {worker_id: now})
    for name in queues:
        pipe.zadd(keys.queue_workers(name), {worker_id: now})
        pipe.sadd(keys.RQ_QUEUES, keys.queue(name))
    call(client, pipe.execute)


def unregister_worker(client: redis.Redis, worker_id: str, queues: list[str]) -> None:
    """Remove a stopping worker from the registry (its counters stay for a day)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(keys.WORKERS, worker_id)
    for name in queues:
        pipe.zrem(keys.queue_workers(name), worker_id)
    pipe.hset(keys.worker(worker_id), "state", "stopped")
    call(client, pipe.execute)


def live_workers_for(client: redis.Redis, queue: str) -> int:
    """How many workers with a fresh heartbeat serve ``queue``."""
    return int(call(client, client.zcount, keys.queue_workers(queue),
                    time.time() - WORKER_STALE_SECONDS, "+inf"))


def list_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Workers with a fresh heartbeat, newest heartbeat first."""
    ids = call(client, client.zrevrangebyscore, keys.WORKERS, "+inf",
               time.time() - WORKER_STALE_SECONDS)
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(keys.worker(worker_id.decode()))
    out = []
    for raw in call(client, pipe.execute):
        if raw:
            row: dict[str, Any] = decode(raw)
            row["queues"] = json.loads(row.get("queues", "[]"))
            out.append(row)
    return out


#: A stop request nobody takes (the worker died first) disappears after this many seconds.
STOP_REQUEST_TTL_SECONDS = 3600


def request_stop(client: redis.Redis, worker_id: str, grace: float | None = None) -> bool:
    """Ask a live worker to drain and stop (``grace``: seconds; None: the worker's --grace).

    Returns False, writing nothing, when no live worker has this id.
    """
    if call(client, client.zscore, keys.WORKERS, worker_id) is None:
        return False
    call(client, client.set, keys.worker_stop(worker_id), "" if grace is None else repr(grace),
         ex=STOP_REQUEST_TTL_SECONDS)
    return True


def take_stop_request(client: redis.Redis, worker_id: str) -> float | None:
    """The grace of a pending stop request for this worker, removing it (-1.0: the worker's
    own grace); None when there is none."""
    raw = call(client, client.getdel, keys.worker_stop(worker_id))
    if raw is None:
        return None
    return float(raw) if raw else -1.0
