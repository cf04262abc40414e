"""Queue operations of executors (claim, finish) and the worker registry."""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flowkit.store import keys
from flowkit.store.connection import call
from flowkit.store import lua
from flowkit.store.runs import REPLY_MAXLEN

if TYPE_CHECKING:
    import redis

#: Call bodies up to this size come back inside the claim reply; larger ones by a plain HGET.
INLINE_BODY_BYTES = 64 << 10
#: A worker whose heartbeat is older than this many seconds is treated as gone.
WORKER_STALE_SECONDS = 15.0


@dataclass(frozen=True)
class Claim:
    """A task run an executor has claimed: its envelope and where to send the outcome."""

    id: str
    envelope: bytes
    body: bytes | None  #: None: too large for the claim reply; see fetch_bodies()
    attempt: int
    flow_run_id: str
    reply_to: str
    #: When the claim reply arrived (the claim script stamped the run as started then).
    claimed_at: float = 0.0


@dataclass
class Outcome:
    """What one attempt produced, ready for :func:`finish`."""

    state: str
    result: bytes = b""
    inline: bool = False
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    exception: bytes = b""
    retry_delay: float | None = None
    started: float | None = None
    #: The task run has a cache key: its end settles the cache (store, answer waiters).
    settles_cache: bool = False


def claim(client: redis.Redis, worker_id: str, executor_id: str, queues: list[str], *,
          lease_seconds: float, limit: int = 1, taken: str = "", push: bool = False,
          pipe: Any = None) -> Any:
    """Claim up to ``limit`` task runs (run now, or queued on ``pipe``); see claim.lua."""
    return lua.run(client, "claim",
                   [keys.processing(executor_id), keys.SCHEDULED, keys.LEASES,
                    *[keys.queue(q) for q in queues]],
                   [time.time(), worker_id, keys.TASK_RUN_PREFIX, keys.FLOW_RUN_PREFIX,
                    keys.RQ_JOB_PREFIX, taken, "1" if push else "0", limit,
                    INLINE_BODY_BYTES, executor_id, lease_seconds, keys.QUEUE_STATS_PREFIX,
                    keys.EVENTS],
                   pipe=pipe)


@dataclass(frozen=True)
class Limits:
    """Settings the recovery scripts need, passed down from the worker's Settings."""

    max_crashes: int = 3
    result_ttl_ms: int = 7 * 24 * 3600 * 1000
    inline_bytes: int = 64 * 1024


def end_unreported(client: redis.Redis, outcome: str, message: str, task_run_ids: list[str],
                   limits: Limits) -> list[str]:
    """End attempts that cannot report themselves (see crash.lua); returns the ids handled."""
    return _crash(client, "ids", outcome, message, task_run_ids, limits)


def reap_expired_leases(client: redis.Redis, limits: Limits) -> list[str]:
    """Crash every attempt whose lease expired: its worker died or froze (see crash.lua)."""
    return _crash(client, "expired", "crashed", "", [], limits)


def _crash(client: redis.Redis, mode: str, outcome: str, message: str, ids: list[str],
           limits: Limits) -> list[str]:
    raw = lua.run(client, "crash", [keys.LEASES, keys.DEAD_LETTER, keys.EVENTS, keys.CANCELLING],
                  [time.time(), mode, keys.TASK_RUN_PREFIX, keys.FLOW_RUN_PREFIX,
                   keys.PROCESSING_PREFIX, keys.RQ_QUEUE_PREFIX, keys.RQ_JOB_PREFIX, outcome,
                   message, limits.max_crashes, REPLY_MAXLEN, limits.result_ttl_ms,
                   keys.QUEUE_STATS_PREFIX, keys.FLOW_RUNS_STATE_PREFIX, *ids])
    handled = [i.decode() for i in raw]
    settle_cache(client, handled, limits.result_ttl_ms, limits.inline_bytes)
    return handled


def promote_due_retries(client: redis.Redis) -> int:
    """Queue the retries whose delay has passed (see promote.lua)."""
    return int(lua.run(client, "promote", [keys.SCHEDULED], [time.time()]))


def cancel_requested(client: redis.Redis, task_run_ids: list[str]) -> list[str]:
    """Which of these running task runs somebody asked to cancel."""
    if not task_run_ids:
        return []
    flags = call(client, client.smismember, keys.CANCELLING, task_run_ids)
    return [i for i, flag in zip(task_run_ids, flags) if flag]


def settle_cache(client: redis.Redis, task_run_ids: list[str], result_ttl_ms: int,
                 inline_bytes: int, pipe: Any = None) -> Any:
    """Store results under their cache keys and answer or hand over to waiting calls
    (see settle.lua); a no-op for task runs without a cache key."""
    if not task_run_ids:
        return None
    return lua.run(client, "settle", [keys.EVENTS],
                   [time.time(), keys.TASK_RUN_PREFIX, keys.FLOW_RUN_PREFIX,
                    keys.RQ_QUEUE_PREFIX, keys.RQ_JOB_PREFIX, keys.RESULT_PREFIX,
                    keys.CACHE_PREFIX, keys.CACHE_INDEX_PREFIX, result_ttl_ms, REPLY_MAXLEN,
                    inline_bytes, *task_run_ids], pipe=pipe)


def renew_leases(client: redis.Redis, worker_id: str, task_run_ids: list[str],
                 lease_seconds: float, running: list[str] | None = None) -> int:
    """Push back the lease deadline of this worker's attempts; mark those ``running`` right
    now, so that if the worker dies only they count as crashed (see crash.lua)."""
    held_ids = set(task_run_ids)
    running = [i for i in running or [] if i in held_ids]
    in_hand = set(running)
    held = running + [i for i in task_run_ids if i not in in_hand]
    if not held:
        return 0
    return int(lua.run(client, "renew", [keys.LEASES],
                       [worker_id, time.time() + lease_seconds, keys.TASK_RUN_PREFIX,
                        len(running), *held]))


def parse_claims(raw: list[Any] | None) -> list[Claim]:
    """The claims in a claim script reply."""
    now = time.time()
    return [Claim(r[0].decode(), r[1] or b"", r[2], int(r[3]), r[4].decode(),
                  r[5].decode(), now) for r in raw or ()]


def fetch_bodies(client: redis.Redis, claims: list[Claim]) -> list[Claim]:
    """Fill in the large call bodies a claim reply left out, in one round trip."""
    missing = [c for c in claims if c.body is None]
    if not missing:
        return claims
    pipe = client.pipeline(transaction=False)
    for c in missing:
        pipe.hget(keys.rq_job(c.id), "flowkit_body")
    bodies = dict(zip((c.id for c in missing), call(client, pipe.execute)))
    return [replace(c, body=bodies[c.id] or b"") if c.body is None else c for c in claims]


def release(client: redis.Redis, worker_id: str, executor_id: str, task_run_ids: list[str],
            pipe: Any = None) -> Any:
    """Give unstarted claims back to the front of their queues; see release.lua."""
    return lua.run(client, "release", [keys.processing(executor_id), keys.LEASES],
                   [worker_id, keys.TASK_RUN_PREFIX, keys.FLOW_RUN_PREFIX, keys.RQ_JOB_PREFIX,
                    keys.RQ_QUEUE_PREFIX, keys.QUEUE_STATS_PREFIX, *task_run_ids], pipe=pipe)


def wait_for_work(client: redis.Redis, executor_id: str, queues: list[str],
                  timeout: float) -> tuple[bool, str]:
    """Block until work may be there: ``(woken, task_run_id)``; ``(False, "")`` after ``timeout``.

    One queue: BLMOVE takes the id straight onto the executor's processing list, atomically.
    Several queues: there is no atomic blocking move from several lists, and BLMPOP would hold
    the id in this process until the claim script records it (an executor killed in between
    would lose that task). So the executor waits on the queues' bells instead (see _bell.lua)
    and the caller claims from the queues, in priority order, in one script.
    """
    if len(queues) == 1:
        got = call(client, client.blmove, keys.queue(queues[0]), keys.processing(executor_id),
                   timeout, "LEFT", "RIGHT")
        return (True, got.decode()) if got else (False, "")
    got = call(client, client.blmpop, timeout, len(queues), *[keys.bell(q) for q in queues],
               direction="LEFT", count=1)
    return (got is not None, "")


def finish(client: redis.Redis, pipe: Any, worker_id: str, executor_id: str, claimed: Claim,
           queue: str, outcome: Outcome, result_ttl_ms: int) -> None:
    """Queue the fenced finish script for one attempt on ``pipe`` (a pipeline of ``client``)."""
    lua.run(client, "finish",
            [keys.processing(executor_id), keys.worker(worker_id), keys.task_run(claimed.id),
             keys.result(claimed.id), keys.rq_job(claimed.id), keys.EVENTS, keys.SCHEDULED,
             keys.queue(queue), keys.LEASES, keys.CANCELLING, keys.queue_stats(queue)],
            [claimed.id, claimed.attempt, outcome.state, time.time(), outcome.result,
             result_ttl_ms, "1" if outcome.inline else "0", outcome.error_type,
             outcome.error_message, outcome.traceback, outcome.exception, keys.FLOW_RUN_PREFIX,
             worker_id, "" if outcome.retry_delay is None else outcome.retry_delay,
             REPLY_MAXLEN, "" if outcome.started is None else outcome.started,
             keys.FLOW_RUNS_STATE_PREFIX], pipe=pipe)


def register_worker(client: redis.Redis, worker_id: str, queues: list[str], concurrency: int,
                    version: str) -> None:
    """Announce a worker and the queues it serves."""
    now = time.time()
    import os
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
    pipe.expire(keys.worker(worker_id), 24 * 3600)
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
            row: dict[str, Any] = {k.decode(): v.decode() for k, v in raw.items()}
            row["queues"] = json.loads(row.get("queues", "[]"))
            out.append(row)
    return out


def list_queues(client: redis.Redis) -> list[dict[str, Any]]:
    """Every known queue with its depth, scheduled retries and live worker count."""
    names = sorted(keys.queue_name(k.decode()) for k in call(client, client.smembers, keys.RQ_QUEUES))
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.llen(keys.queue(name))
        pipe.zcount(keys.queue_workers(name), time.time() - WORKER_STALE_SECONDS, "+inf")
    replies = call(client, pipe.execute)
    return [{"name": name, "depth": int(replies[2 * i]), "workers": int(replies[2 * i + 1])}
            for i, name in enumerate(names)]
