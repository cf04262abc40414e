"""A due retry goes to the FRONT of its queue: behind a 10,000-task backlog, a task retried
after 2 s starts again about 2 s after it failed, not after the backlog (51 s once)."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowkit
from flowkit import unmapped
from flowkit.store import keys, task_runs

from conftest import wait_until
from tasks_for_tests import fail_first_time, sleep_then

pytestmark = pytest.mark.slow

BACKLOG = 10_000
DELAY = 2.0


def test_a_due_retry_starts_within_its_delay_behind_a_10k_backlog(workers, client,
                                                                  tmp_path: Path) -> None:
    flaky = fail_first_time.with_options(retries=1, retry_delay_seconds=DELAY).submit(
        str(tmp_path / "flaky"))
    backlog = sleep_then.map([0.005] * BACKLOG, value=unmapped(0))  # >= 50 s of work
    # map() returns once its first chunks are queued; the rest follows in the background.
    wait_until(lambda: client.llen(keys.queue("default")) == BACKLOG + 1, timeout=120,
               message="the whole backlog queued")
    workers.start("default", concurrency=1)
    try:
        assert flaky.result(timeout=DELAY + 15) == "ran 2 times"
        history = task_runs.get_history(client, flaky.task_run_id)
        assert [h["state"] for h in history] == ["running", "failed", "running", "completed"]
        waited = history[2]["ts"] - history[1]["ts"]
        print(f"\nretry started {waited:.2f}s after the failure, delay {DELAY}s, with "
              f"{client.llen(keys.queue('default'))} tasks still queued")
        assert DELAY - 0.1 <= waited < DELAY + 2.5, f"waited {waited:.2f}s"
        assert client.llen(keys.queue("default")) > BACKLOG // 2  # the backlog was still there
    finally:
        counts = flowkit.cancel(backlog)
    assert counts.cancelled + counts.stopping + counts.unchanged == BACKLOG
