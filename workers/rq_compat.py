"""Lets a stock ``rq worker`` run flowkit task runs: each RQ job calls :func:`run_task_run`.

flowkit's own executors are much faster (no fork, one round trip per task); this exists so that
operators can drain a flowkit queue with plain RQ tooling if they ever need to.
"""

from __future__ import annotations

import os

from flowkit.serializers import load_signing_key
from flowkit.settings import get_settings
from flowkit.store import lua, queue as queue_store
from flowkit.workers.execution import ExecutionContext, run_attempt


def run_task_run(task_run_id: str) -> str:
    """Execute one flowkit task run inside an RQ job; returns its final state."""
    from rq import get_current_job

    job = get_current_job()
    client = job.connection if job is not None else None
    if client is None:
        raise RuntimeError("run_task_run must run inside an RQ job")
    settings = get_settings()
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    executor_id = f"rq-{os.getpid()}"
    worker_id = job.worker_name or executor_id  # type: ignore[union-attr]
    claims = queue_store.fetch_bodies(client, queue_store.parse_claims(queue_store.claim(
        client, worker_id, executor_id, [], lease_seconds=settings.lease_seconds,
        taken=task_run_id, push=True)))
    if not claims:
        return "skipped"
    claimed = claims[0]
    ctx = ExecutionContext(client, load_signing_key(secret, settings.home),
                           settings.inline_result_bytes, job.origin)  # type: ignore[union-attr]
    attempt = run_attempt(ctx, claimed)
    lua.execute(client, lambda pipe: queue_store.finish(
        client, pipe, worker_id, executor_id, claimed, attempt.queue, attempt.outcome,
        settings.result_ttl_seconds * 1000))
    return attempt.outcome.state
