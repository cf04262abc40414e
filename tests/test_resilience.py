"""Crash recovery with real processes and signals: SIGKILL, SIGSTOP/SIGCONT, poison pills,
hard timeouts. Leases are short here (2 s) so the tests stay quick."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from flowkit import unmapped
from flowkit.errors import TaskTimeout, WorkerCrashed
from flowkit.states import RunState
from flowkit.store import task_runs

from conftest import frozen_worker, wait_until
from tasks_for_tests import exit_hard, identity, record_run, sleep_ignoring_signals, sleep_then

pytestmark = pytest.mark.slow

FAST_LEASES = {"FLOWKIT_LEASE_SECONDS": "2", "FLOWKIT_HEARTBEAT_SECONDS": "0.5"}


def _state(client, task_run_id: str) -> str:
    return (client.hget(f"flowkit:taskrun:{task_run_id}", "state") or b"").decode()


def _executions(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_sigkill_of_a_whole_worker_loses_nothing(workers, client, tmp_path) -> None:
    marker = tmp_path / "runs"
    doomed = workers.start("default", concurrency=1, env=FAST_LEASES, name="doomed")
    workers.wait_registered(client)
    future = record_run.submit(str(marker), 1.0)
    # Kill once the body runs (claimed is not enough: the executor may still be unpickling).
    wait_until(lambda: len(_executions(marker)) == 1, message="the body to start")
    survivor = workers.start("default", concurrency=1, env=FAST_LEASES, name="survivor")
    os.killpg(doomed.pid, signal.SIGKILL)  # the host "dies": supervisor and executors at once
    killed_at = time.monotonic()
    result = future.result(timeout=20)
    recovered_in = time.monotonic() - killed_at
    assert result.startswith("done by")
    assert recovered_in < 2 + 2 + 1.0 + 1, f"recovery took {recovered_in:.1f}s"
    history = task_runs.get_history(client, future.task_run_id)
    assert [(h["state"], h["attempt"], h.get("worker")) for h in history] == [
        ("running", 1, "doomed"), ("crashed", 1, "doomed"), ("running", 2, "survivor"),
        ("completed", 2, "survivor")]
    assert "stopped renewing its lease" in history[1]["message"]
    assert len(_executions(marker)) == 2  # at least once: the body ran twice
    assert survivor.poll() is None


def test_whole_worker_death_counts_a_crash_only_against_the_running_task(workers,
                                                                         client) -> None:
    doomed = workers.start("default", concurrency=1, env=FAST_LEASES, name="doomed")
    workers.wait_registered(client)
    # Fast tasks teach the executor to claim several at a time.
    assert [f.result(timeout=10) for f in identity.map(range(200))] == list(range(200))
    futures = sleep_then.map([3.0] + [0.0] * 9, value=unmapped("ok"))
    sleeper, rest = futures[0], futures[1:]
    def claimed() -> list:
        return [f for f in rest if _state(client, f.task_run_id) == "running"]

    wait_until(lambda: _state(client, sleeper.task_run_id) == "running" and claimed(),
               message="a batch claimed behind the sleeper")
    batched = claimed()
    time.sleep(0.3)  # the sleeper's body runs (and its supervisor saw it at a heartbeat)
    os.killpg(doomed.pid, signal.SIGKILL)
    workers.start("default", concurrency=1, env=FAST_LEASES, name="survivor")
    assert [f.result(timeout=30) for f in futures] == ["ok"] * 10

    def states(f: Any) -> list[str]:
        return [h["state"] for h in task_runs.get_history(client, f.task_run_id)]

    assert states(sleeper) == ["running", "crashed", "running", "completed"]
    assert client.hget(f"flowkit:taskrun:{sleeper.task_run_id}", "crashes") == b"1"
    for f in batched:
        history = task_runs.get_history(client, f.task_run_id)
        assert [h["state"] for h in history] == ["pending", "running", "completed"], history
        assert "died before starting it" in history[0]["message"]
        assert history[1]["attempt"] == 1 and history[1]["worker"] == "survivor"
        assert client.hget(f"flowkit:taskrun:{f.task_run_id}", "crashes") is None


def test_frozen_worker_cannot_write_a_stale_result(workers, client, tmp_path) -> None:
    marker = tmp_path / "runs"
    frozen = workers.start("default", concurrency=1, env=FAST_LEASES, name="frozen")
    workers.wait_registered(client)
    future = record_run.submit(str(marker), 1.5, label=" (first)")
    wait_until(lambda: len(_executions(marker)) == 1, message="the body to start")
    with frozen_worker(frozen.pid):
        workers.start("default", concurrency=1, env=FAST_LEASES, name="thawed-peer")
        wait_until(lambda: client.hget(f"flowkit:taskrun:{future.task_run_id}", "attempt")
                   == b"2", timeout=15, message="the second attempt")
    result = future.result(timeout=20)
    # The frozen attempt finishes after its resume and is fenced off: one result, attempt 2's.
    wait_until(lambda: len(_executions(marker)) == 2, message="both bodies to run")
    time.sleep(2.0)  # give the resumed attempt time to try to record its result
    record = task_runs.get_task_run(client, future.task_run_id)
    assert record is not None and record["state"] == "completed" and record["attempt"] == "2"
    assert record["worker"] == "thawed-peer"
    assert "(first)" in result
    history = task_runs.get_history(client, future.task_run_id)
    assert [h["state"] for h in history].count("completed") == 1
    assert [h["state"] for h in history] == ["running", "crashed", "running", "completed"]


def test_poison_pill_is_dead_lettered_and_the_worker_keeps_serving(workers, client) -> None:
    proc = workers.start("default", concurrency=1)
    workers.wait_registered(client)
    pill = exit_hard.submit(9)
    with pytest.raises(WorkerCrashed, match="dead-lettered after 3 crashes"):
        pill.result(timeout=30)
    history = task_runs.get_history(client, pill.task_run_id)
    assert [h["state"] for h in history] == ["running", "crashed"] * 3
    assert all("exit code 9" in h["message"] for h in history if h["state"] == "crashed")
    assert client.lrange("flowkit:deadletter", 0, -1) == [pill.task_run_id.encode()]
    assert identity.submit("still serving").result(timeout=15) == "still serving"
    assert proc.poll() is None


def test_timeout_kills_code_that_ignores_signals(workers, client) -> None:
    proc = workers.start("default", concurrency=1)
    workers.wait_registered(client)
    stuck = sleep_ignoring_signals.with_options(timeout_seconds=0.5, retries=1).submit(60)
    started = time.monotonic()
    with pytest.raises(TaskTimeout, match="ignored the interrupt"):
        stuck.result(timeout=30)
    assert time.monotonic() - started < 2 * (0.5 + 1.0) + 3
    assert stuck.state is RunState.TIMED_OUT
    history = task_runs.get_history(client, stuck.task_run_id)
    assert [(h["state"], h["attempt"]) for h in history] == [
        ("running", 1), ("timed_out", 1), ("running", 2), ("timed_out", 2)]
    assert identity.submit("next").result(timeout=15) == "next"  # a fresh executor serves
    assert proc.poll() is None


def test_a_hard_timeout_waits_out_retry_delay_seconds(workers, client) -> None:
    """Regression: the reaper's copy of "end a run" used to retry a killed attempt at once."""
    workers.start("default", concurrency=1)
    workers.wait_registered(client)
    stuck = sleep_ignoring_signals.with_options(timeout_seconds=0.5, retries=1,
                                                retry_delay_seconds=3).submit(60)
    with pytest.raises(TaskTimeout):
        stuck.result(timeout=30)
    history = task_runs.get_history(client, stuck.task_run_id)
    assert [(h["state"], h.get("retry_in")) for h in history] == [
        ("running", None), ("timed_out", 3), ("running", None), ("timed_out", None)]
    waited = history[2]["ts"] - history[1]["ts"]
    assert 3.0 <= waited < 3.0 + 2.0, f"the retry started {waited:.2f} s after the kill"
