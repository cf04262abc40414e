"""The worker registry: who serves which queue, and since when (no run state).

Heartbeats are stamped by the server (registry.lua) and read against the server's clock
(:func:`flowkit.store.clock.server_time`), so a worker whose host clock is off is neither
taken for dead nor shown with a negative age.
"""

from __future__ import annotations

import json
import os
import socket
from typing import TYPE_CHECKING, Any

from flowkit.store import functions, keys
from flowkit.store._codec import decode
from flowkit.store.clock import server_time
from flowkit.store.connection import call
from flowkit.store.limits import Limits

if TYPE_CHECKING:
    import redis

#: A worker whose heartbeat is older than this many seconds is treated as gone.
WORKER_STALE_SECONDS = 15.0
#: A stopped worker's hash (and its counters) stays this long.
WORKER_KEEP_SECONDS = 24 * 3600
#: The registry's library calls touch no results, replies or crash counts: no limits apply.
_NO_LIMITS = Limits(result_ttl_ms=0, inline_bytes=0, max_crashes=0)


def register_worker(client: redis.Redis, worker_id: str, queues: list[str], concurrency: int,
                    version: str) -> None:
    """Announce a worker and the queues it serves (started and heartbeat: the server's now)."""
    call(client, client.hset, keys.worker(worker_id), mapping={
        "id": worker_id, "host": socket.gethostname(), "pid": os.getpid(),
        "queues": json.dumps(queues), "concurrency": concurrency, "version": version,
        "busy": 0, "state": "running", "tasks_done": 0, "tasks_failed": 0})
    _beat(client, worker_id, queues, busy=0, starting=True)


def heartbeat(client: redis.Redis, worker_id: str, queues: list[str], busy: int) -> None:
    """Refresh a worker's liveness in the registry and in each queue it serves."""
    _beat(client, worker_id, queues, busy=busy, starting=False)


def _beat(client: redis.Redis, worker_id: str, queues: list[str], *, busy: int,
          starting: bool) -> None:
    functions.call(client, "heartbeat", _NO_LIMITS, [
        worker_id, busy, "1" if starting else "0", WORKER_KEEP_SECONDS, *queues])


def unregister_worker(client: redis.Redis, worker_id: str, queues: list[str]) -> None:
    """Remove a stopping worker from the registry (its counters stay for a day)."""
    pipe = client.pipeline(transaction=False)
    pipe.zrem(keys.WORKERS, worker_id)
    for name in queues:
        pipe.zrem(keys.queue_workers(name), worker_id)
    pipe.hset(keys.worker(worker_id), "state", "stopped")
    call(client, pipe.execute)


def live_workers_for(client: redis.Redis, queue: str) -> int:
    """How many workers with a fresh heartbeat (by the server's clock) serve ``queue``."""
    cutoff = server_time(client) - WORKER_STALE_SECONDS
    return int(call(client, client.zcount, keys.queue_workers(queue), cutoff, "+inf"))


def list_workers(client: redis.Redis) -> list[dict[str, Any]]:
    """Workers with a fresh heartbeat, newest heartbeat first; each row carries
    ``heartbeat_age``, seconds since its last heartbeat by the server's clock (never < 0)."""
    now = server_time(client)
    ids = call(client, client.zrevrangebyscore, keys.WORKERS, "+inf", now - WORKER_STALE_SECONDS)
    pipe = client.pipeline(transaction=False)
    for worker_id in ids:
        pipe.hgetall(keys.worker(worker_id.decode()))
    out = []
    for raw in call(client, pipe.execute):
        if raw:
            row: dict[str, Any] = decode(raw)
            row["queues"] = json.loads(row.get("queues", "[]"))
            row["heartbeat_age"] = max(0.0, now - float(row.get("heartbeat") or now))
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
