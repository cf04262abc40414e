"""Attempts from the workers' side: claim, finish, give back, renew leases, reap the dead,
promote due retries, wait for work (library functions in ``attempts.lua`` and ``reap.lua``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flowkit.store import functions, keys
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

    from flowkit.store.limits import Limits

logger = logging.getLogger(__name__)

#: Call bodies up to this size come back inside the claim reply; larger ones by a plain HGET.
INLINE_BODY_BYTES = 64 << 10


@dataclass(frozen=True)
class Claim:
    """A task run an executor has claimed: its envelope and where to send the outcome."""

    id: str
    envelope: bytes
    body: bytes | None  #: None: too large for the claim reply; see fetch_bodies()
    attempt: int
    flow_run_id: str
    reply_to: str
    #: When the claim reply arrived, by this host's clock (the claim stamped the run as started
    #: then, by the server's): finish() sends a later start as a delay after it.
    claimed_at: float = 0.0


@dataclass
class Outcome:
    """What one attempt produced, ready for :func:`finish`."""

    state: str
    result: bytes = b""
    error_type: str = ""
    error_message: str = ""
    traceback: str = ""
    exception: bytes = b""
    retry_delay: float | None = None
    started: float | None = None


def claim(client: redis.Redis, limits: Limits, worker_id: str, executor_id: str,
          queues: list[str], *, lease_seconds: float, limit: int = 1, taken: str = "",
          push: bool = False, pipe: Any = None, token: str = "") -> Any:
    """Claim up to ``limit`` task runs (run now, or queued on ``pipe``); see attempts.lua.

    ``token``: names this claim (:func:`new_claim_token`), made once per round trip: sent
    again (its reply lost, a retry), the same claim answers with the task runs it took the
    first time instead of taking more that nobody would know about."""
    return functions.call(client, "claim", limits, [
        worker_id, executor_id, lease_seconds, limit, token, taken,
        "1" if push else "0", *queues], pipe=pipe)


def new_claim_token() -> str:
    """A token for one claim (unique for an executor's lifetime and beyond)."""
    return os.urandom(6).hex()


def parse_claims(raw: list[Any] | None, now: float) -> list[Claim]:
    """The claims in a claim reply (``now``: when it arrived)."""
    return [Claim(r[0].decode(), r[1] or b"", r[2], int(r[3]),
                  r[4].decode(), r[5].decode(), now) for r in raw or ()]


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


def finish(client: redis.Redis, limits: Limits, worker_id: str, executor_id: str,
           outcomes: list[tuple[Claim, Outcome]], pipe: Any = None) -> Any:
    """Record attempts' outcomes, each fenced by its attempt number, in one call (see
    attempts.lua); returns ``[recorded, log line of each refused outcome...]`` (a stale
    attempt writes only that line; pass the reply to :func:`log_refused`)."""
    args: list[Any] = [executor_id, worker_id]
    for claimed, o in outcomes:
        args += [claimed.id, claimed.attempt, o.state, o.result, o.error_type,
                 o.error_message, o.traceback, o.exception,
                 "" if o.retry_delay is None else o.retry_delay,
                 "" if o.started is None else repr(max(0.0, o.started - claimed.claimed_at))]
    return functions.call(client, "finish", limits, args, pipe=pipe)


def log_refused(reply: Any) -> int:
    """Log, in this worker's log, each outcome a finish reply says the fence refused (the
    library wrote the same line to the run's log stream); returns how many were refused."""
    lines = [line.decode() if isinstance(line, bytes) else str(line)
             for line in (reply or [])[1:]] if isinstance(reply, list) else []
    for line in lines:
        logger.warning("%s", line)
    return len(lines)


def release(client: redis.Redis, limits: Limits, worker_id: str, executor_id: str,
            task_run_ids: list[str], pipe: Any = None) -> Any:
    """Give unstarted claims back to the front of their queues; see attempts.lua."""
    return functions.call(client, "release", limits, [worker_id, executor_id, *task_run_ids],
                          pipe=pipe)


def renew_leases(client: redis.Redis, limits: Limits, worker_id: str, task_run_ids: list[str],
                 lease_seconds: float, running: list[str] | None = None) -> int:
    """Extend the leases of this worker's attempts to ``lease_seconds`` from the server's
    now (a duration, not a deadline: the host's clock may be off); mark those ``running``
    right now, so that if the worker dies only they count as crashed (reap.lua)."""
    held_ids = set(task_run_ids)
    running = [i for i in running or [] if i in held_ids]
    in_hand = set(running)
    held = running + [i for i in task_run_ids if i not in in_hand]
    if not held:
        return 0
    return int(functions.call(client, "renew", limits,
                              [worker_id, lease_seconds, len(running), *held]))


def end_unreported(client: redis.Redis, limits: Limits, outcome: str, message: str,
                   task_run_ids: list[str], retry_delay: float | None = None) -> list[str]:
    """End attempts that cannot report themselves (see reap.lua); returns the ids handled.

    Args:
        outcome: "crashed", "timed_out" or "cancelled".
        retry_delay: for "timed_out", the retry decision the executor made when the attempt
            started (seconds; negative: no retry); None retries at once while retries remain.
    """
    return _reap(client, limits, "ids", outcome, message, task_run_ids, retry_delay)


def reap_expired_leases(client: redis.Redis, limits: Limits) -> list[str]:
    """Crash every attempt whose lease expired: its worker died or froze (see reap.lua)."""
    return _reap(client, limits, "expired", "crashed", "", [], None)


def _reap(client: redis.Redis, limits: Limits, mode: str, outcome: str, message: str,
          ids: list[str], retry_delay: float | None) -> list[str]:
    raw = functions.call(client, "reap", limits, [
        mode, outcome, message, "" if retry_delay is None else retry_delay, *ids])
    return [i.decode() for i in raw]


def promote_due_retries(client: redis.Redis, limits: Limits) -> int:
    """Queue the retries whose delay has passed (see reap.lua)."""
    return int(functions.call(client, "promote", limits))


def cancel_requested(client: redis.Redis, task_run_ids: list[str]) -> list[str]:
    """Which of these running task runs somebody asked to cancel."""
    if not task_run_ids:
        return []
    flags = call(client, client.smismember, keys.CANCELLING, task_run_ids)
    return [i for i, flag in zip(task_run_ids, flags) if flag]


def processing(client: redis.Redis, executor_ids: list[str]) -> list[str]:
    """The task run ids these executors have claimed and not finished, in one round trip."""
    pipe = client.pipeline(transaction=False)
    for executor_id in executor_ids:
        pipe.lrange(keys.processing(executor_id), 0, -1)
    return [i.decode() for ids in call(client, pipe.execute) for i in ids]


def wait_for_work(client: redis.Redis, executor_id: str, queues: list[str],
                  timeout: float) -> tuple[bool, str]:
    """Block until work may be there: ``(woken, task_run_id)``; ``(False, "")`` after ``timeout``.

    One queue: BLMOVE takes the id straight onto the executor's processing list, atomically.
    Several queues: there is no atomic blocking move from several lists, and BLMPOP would hold
    the id in this process until the claim records it (an executor killed in between would
    lose that task). So the executor waits on the queues' bells instead (see queueing.lua)
    and the caller claims from the queues, in priority order, in one call.
    """
    if len(queues) == 1:
        got = call(client, client.blmove, keys.queue(queues[0]), keys.processing(executor_id),
                   timeout, "LEFT", "RIGHT")
        return (True, got.decode()) if got else (False, "")
    got = call(client, client.blmpop, timeout, len(queues), *[keys.bell(q) for q in queues],
               direction="LEFT", count=1)
    return (got is not None, "")
