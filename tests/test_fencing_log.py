"""A stale result refused by fencing is said out loud, once: a worker frozen (SIGSTOP) past
its lease wakes up and tries to record an outcome for an attempt that was already run again
elsewhere. The refusal names the task run and both attempts, in the frozen worker's log and
in the run's log stream (``flowkit run logs``)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from flowkit.cli import cli
from flowkit.store import task_runs

from conftest import children, wait_until
from tasks_for_tests import record_run

pytestmark = pytest.mark.slow

FAST_LEASES = {"FLOWKIT_LEASE_SECONDS": "2", "FLOWKIT_HEARTBEAT_SECONDS": "0.5"}


def _executions(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_refused_stale_result_is_logged_once_naming_both_attempts(workers, client,
                                                                    tmp_path: Path) -> None:
    marker = tmp_path / "runs"
    frozen = workers.start("default", concurrency=1, env=FAST_LEASES, name="frozen")
    workers.wait_registered(client)
    future = record_run.submit(str(marker), 1.5, label=" (first)")
    wait_until(lambda: len(_executions(marker)) == 1, message="the body to start")
    executors = children(frozen.pid)
    for pid in [frozen.pid, *executors]:
        os.kill(pid, signal.SIGSTOP)
    try:
        workers.start("default", concurrency=1, env=FAST_LEASES, name="peer")
        wait_until(lambda: client.hget(f"flowkit:taskrun:{future.task_run_id}", "attempt")
                   == b"2", timeout=15, message="the second attempt")
        # The executor wakes first and tries to record its outcome. (Woken together, the
        # supervisor's lease watchdog may kill the stale attempt before it records: that is
        # the other good ending, and not the one this test is about.)
        for pid in executors:
            os.kill(pid, signal.SIGCONT)
        expected = (f"stale result refused: task run {future.task_run_id} attempt 1 "
                    "(worker frozen)")
        wait_until(lambda: expected in workers.output(frozen), timeout=15,
                   message="the refusal in the frozen worker's log")
    finally:
        for pid in [*executors, frozen.pid]:
            os.kill(pid, signal.SIGCONT)
    future.result(timeout=20)
    wait_until(lambda: len(_executions(marker)) == 2, message="both bodies to run")
    time.sleep(1.0)  # a repeated line would show up by now
    worker_lines = [line for line in workers.output(frozen).splitlines() if expected in line]
    assert len(worker_lines) == 1, worker_lines
    assert "moved on to attempt 2 (" in worker_lines[0] and "worker peer)" in worker_lines[0]

    record = task_runs.get_task_run(client, future.task_run_id)
    assert record is not None and record["attempt"] == "2" and record["worker"] == "peer"
    result = CliRunner().invoke(cli, ["run", "logs", record["flow_run_id"], "--json"])
    assert result.exit_code == 0, result.output
    run_lines = [line for line in result.output.splitlines() if expected in line]
    assert len(run_lines) == 1, result.output
    assert "moved on to attempt 2 (" in run_lines[0]
    assert json.loads(run_lines[0])["task_run_id"] == future.task_run_id
