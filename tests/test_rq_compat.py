"""flowkit queues are RQ queues: RQ's own API sees them and a stock RQ worker can run them."""

from __future__ import annotations

import os
import subprocess
import sys

import rq

from flowkit.states import RunState
from flowkit.store import task_runs
from flowkit.store.cache import cache_entry_exists

from conftest import TESTS_DIR
from tasks_for_tests import add, cached_count, sleep_then


def drain_with_stock_rq(redis_url: str, queue: str, env: dict[str, str] | None = None) -> None:
    """Run a stock `rq worker` (SimpleWorker, burst) on ``queue`` until it is empty."""
    done = subprocess.run(
        [sys.executable, "-m", "rq.cli", "worker", "--burst", "--url", redis_url,
         "--worker-class", "rq.worker.SimpleWorker", queue],
        capture_output=True, text=True, timeout=60, cwd=TESTS_DIR,
        env={**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr


def test_rq_sees_flowkit_queues_and_jobs(client) -> None:
    futures = add.map(range(4), [1] * 4)
    queue = rq.Queue("default", connection=client)
    assert queue.count == 4
    assert [q.name for q in rq.Queue.all(connection=client)] == ["default"]
    job = queue.jobs[0]
    assert job.func_name == "flowkit.workers.rq_compat.run_task_run"
    assert job.args == (futures[0].task_run_id,)
    assert job.get_status() == "queued"


def test_stock_rq_worker_runs_flowkit_tasks(redis_url, client) -> None:
    futures = add.map(range(3), [10] * 3)
    drain_with_stock_rq(redis_url, "default")
    assert [f.result(timeout=10) for f in futures] == [10, 11, 12]
    assert all(f.state is RunState.COMPLETED for f in futures)


def test_stock_rq_worker_renews_leases_of_long_tasks(redis_url, client, workers) -> None:
    # A flowkit worker on another queue reaps expired leases every second (2 s leases here).
    fast = {"FLOWKIT_LEASE_SECONDS": "2", "FLOWKIT_HEARTBEAT_SECONDS": "0.5"}
    workers.start("elsewhere", concurrency=1, env=fast)
    workers.wait_registered(client, queue="elsewhere")
    future = sleep_then.with_options(queue="rq-only").submit(5.0, "slept")
    drain_with_stock_rq(redis_url, "rq-only", fast)
    assert future.result(timeout=10) == "slept"
    history = task_runs.get_history(client, future.task_run_id)
    assert [h["state"] for h in history] == ["running", "completed"], history


def test_stock_rq_worker_settles_the_cache_of_the_runs_it_finishes(redis_url, client,
                                                                    tmp_path) -> None:
    """Regression: a cache leader finished by a stock RQ worker never wrote its cache entry,
    so the identical call waiting on it (single flight) hung."""
    marker = str(tmp_path / "executions")
    leader, waiter = cached_count.map([marker] * 2, delay=0.2)
    assert client.hget(f"flowkit:taskrun:{waiter.task_run_id}", "cache_wait") == b"1"
    drain_with_stock_rq(redis_url, "default")
    assert leader.result(timeout=10) == waiter.result(timeout=10) == "execution 1"
    assert waiter.state is RunState.CACHED
    key = client.hget(f"flowkit:taskrun:{leader.task_run_id}", "cache_key").decode()
    assert cache_entry_exists(client, key)
