"""Lets a stock ``rq worker`` run flowkit task runs: each RQ job calls :func:`run_task_run`.

flowkit's own executors are much faster (no fork, one round trip per task); this exists so that
operators can drain a flowkit queue with plain RQ tooling if they ever need to. The outcome is
recorded by the same library function as an executor's (``finish``), so everything an end of a
run does (cache entries, waiting identical calls, closing the flow run) happens here too.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flowkit.logs import buffered_task_logs
from flowkit.serializers import load_signing_key
from flowkit.settings import get_settings
from flowkit.store import attempts, functions
from flowkit.store.limits import Limits
from flowkit.store.logs import add_lines
from flowkit.workers.execution import ExecutionContext, run_attempt


def run_task_run(task_run_id: str) -> str:
    """Execute one flowkit task run inside an RQ job; returns its final state.

    An RQ job is this process's entry point, so the settings are read here."""
    from rq import get_current_job

    job = get_current_job()
    client = job.connection if job is not None else None
    if client is None:
        raise RuntimeError("run_task_run must run inside an RQ job")
    settings = get_settings()
    limits = Limits.from_settings(settings)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    executor_id = f"rq-{os.getpid()}"
    worker_id = job.worker_name or executor_id  # type: ignore[union-attr]
    claims = attempts.fetch_bodies(client, attempts.parse_claims(attempts.claim(
        client, limits, worker_id, executor_id, [], lease_seconds=settings.lease_seconds,
        taken=task_run_id, push=True), time.time()))
    if not claims:
        return "skipped"
    claimed = claims[0]
    ctx = ExecutionContext(client, load_signing_key(secret, settings.home),
                           job.origin)  # type: ignore[union-attr]
    with _renewing_lease(client, limits, worker_id, task_run_id, settings.lease_seconds):
        attempt = run_attempt(ctx, claimed)
    with buffered_task_logs() as lines:  # the task's log lines, written before its outcome

        def record(pipe: Any) -> None:
            add_lines(pipe, lines)
            attempts.finish(client, limits, worker_id, executor_id,
                            [(claimed, attempt.outcome)], pipe=pipe)

        functions.execute(client, record)
    return attempt.outcome.state


@contextmanager
def _renewing_lease(client: Any, limits: Limits, worker_id: str, task_run_id: str,
                    lease_seconds: float) -> Iterator[None]:
    """Renew the attempt's lease while it runs, as a flowkit supervisor would: without it,
    any flowkit worker's reaper would crash a task that a stock RQ worker runs for longer than
    the lease. A daemon thread, so the task's own code cannot starve it of the GIL for long
    (and a dead RQ worker stops renewing, which is the point of the lease)."""
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            try:
                attempts.renew_leases(client, limits, worker_id, [task_run_id],
                                      lease_seconds, running=[task_run_id])
            except Exception:  # Redis away for a moment: the next period tries again
                continue

    thread = threading.Thread(target=renew, name="flowkit-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
