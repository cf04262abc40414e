"""Worker processes: SIGTERM drain, burst mode, queue priority, executor crashes."""

from __future__ import annotations

import os
import signal
import time

import pytest

from flowkit import task
from flowkit.errors import WorkerCrashed
from flowkit.states import RunState
from flowkit.store import task_runs
from flowkit.store.workers import list_workers, live_workers_for

from conftest import children, wait_until
from tasks_for_tests import identity, sleep_then, whoami


def _state(client, future) -> str:
    return (client.hget(f"flowkit:taskrun:{future.task_run_id}", "state") or b"").decode()


@pytest.mark.parametrize("whole_group", [False, True], ids=["supervisor", "process-group"])
def test_sigterm_finishes_running_task_keeps_queued_and_exits_0(workers, client,
                                                                whole_group) -> None:
    proc = workers.start("default", concurrency=1)
    workers.wait_registered(client)
    running = sleep_then.submit(1.0, "finished")
    wait_until(lambda: _state(client, running) == "running", message="task to start")
    queued = identity.submit("still queued")
    if whole_group:  # what systemd and Kubernetes do: every process gets the signal
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0, workers.output(proc)
    assert running.result(timeout=1) == "finished"
    assert _state(client, queued) == "pending"
    assert client.lrange("rq:queue:default", 0, -1) == [queued.task_run_id.encode()]
    assert live_workers_for(client, "default") == 0
    # Nothing was lost: a new worker picks the queued task up.
    workers.start("default", concurrency=1)
    assert queued.result(timeout=15) == "still queued"


def test_burst_worker_drains_queue_then_exits(workers, client) -> None:
    futures = identity.map(range(30))
    proc = workers.start("default", concurrency=2, burst=True)
    assert proc.wait(timeout=30) == 0, workers.output(proc)
    assert [f.result(timeout=5) for f in futures] == list(range(30))
    assert client.llen("rq:queue:default") == 0


def test_queues_are_served_in_priority_order(workers, client) -> None:
    low = identity.with_options(queue="low").map(range(5))
    high = identity.with_options(queue="high").map(range(5))
    workers.start("high", "low", concurrency=1, burst=True).wait(timeout=30)
    started = {f.task_run_id: float(task_runs.get_task_run(client, f.task_run_id)["started"])
               for f in low + high}
    assert max(started[f.task_run_id] for f in high) < min(started[f.task_run_id] for f in low)
    assert [f.result(timeout=5) for f in high] == list(range(5))


def test_multi_queue_worker_blocks_on_all_queues(workers, client) -> None:
    workers.start("alpha", "beta", concurrency=1)
    workers.wait_registered(client, queue="beta")
    time.sleep(1.2)  # let the executor settle into its blocking wait
    assert identity.with_options(queue="beta").submit("b").result(timeout=5) == "b"


def test_multi_queue_executor_killed_while_waiting_loses_nothing(workers, client) -> None:
    # A stopped executor still "receives" whatever Redis hands its blocking call. If that call
    # popped task ids (BLMPOP on the queues), the id would sit in a dead socket once the
    # executor is killed: the task would be in no queue and no processing list, lost.
    proc = workers.start("alpha", "beta", concurrency=1)
    workers.wait_registered(client, queue="beta")
    [executor] = wait_until(lambda: children(proc.pid), message="executor started")
    time.sleep(1.2)  # the executor is blocked in its wait
    os.kill(executor, signal.SIGSTOP)
    future = identity.with_options(queue="beta").submit("kept")
    time.sleep(0.3)
    assert client.lrange("rq:queue:beta", 0, -1) == [future.task_run_id.encode()]
    os.kill(executor, signal.SIGKILL)
    assert future.result(timeout=15) == "kept"  # the replacement executor claims it
    history = task_runs.get_history(client, future.task_run_id)
    assert [h["state"] for h in history] == ["running", "completed"]


def test_worker_registry_shows_host_queues_and_counts(worker, client) -> None:
    [f.result(timeout=10) for f in identity.map(range(5))]
    wait_until(lambda: list_workers(client) and int(list_workers(client)[0]["tasks_done"]) == 5,
               message="counters")
    [row] = list_workers(client)
    assert row["queues"] == ["default"] and row["concurrency"] == "2"
    assert row["host"] and int(row["pid"]) == worker.pid


def test_executor_crash_is_recorded_and_worker_keeps_serving(workers, client) -> None:
    @task
    def exits_hard() -> None:
        os._exit(3)

    proc = workers.start("default", concurrency=1)
    workers.wait_registered(client)
    doomed = exits_hard.submit()
    with pytest.raises(WorkerCrashed, match="exited with exit code 3"):
        doomed.result(timeout=15)
    assert doomed.state is RunState.CRASHED
    assert whoami.submit().result(timeout=15) != proc.pid  # a replacement executor serves
    assert proc.poll() is None


def test_crash_with_retries_left_runs_again(workers, client, tmp_path) -> None:
    marker = tmp_path / "crashed-once"

    @task(retries=1)
    def crash_once(path: str) -> str:
        if not os.path.exists(path):
            open(path, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return "second attempt"

    workers.start("default", concurrency=1)
    future = crash_once.submit(str(marker))
    assert future.result(timeout=20) == "second attempt"
    history = task_runs.get_history(client, future.task_run_id)
    assert [(h["state"], h["attempt"]) for h in history] == [
        ("running", 1), ("crashed", 1), ("running", 2), ("completed", 2)]
    assert "SIGKILL" in history[1]["message"]
