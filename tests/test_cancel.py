"""Cancellation: queued runs dropped, running attempts killed, drivers told."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import flowkit
from flowkit import flow
from flowkit.errors import CancelledRun
from flowkit.states import RunState
from flowkit.store import flow_runs, task_runs

from conftest import wait_until
from tasks_for_tests import identity, sleep_then

pytestmark = pytest.mark.slow


def _state(client, task_run_id: str) -> str:
    return (client.hget(f"flowkit:taskrun:{task_run_id}", "state") or b"").decode()


def test_cancel_a_queued_future(client) -> None:
    future = identity.submit("never runs")  # no worker: it stays queued
    assert future.cancel() is True
    with pytest.raises(CancelledRun):
        future.result(timeout=5)
    assert future.cancelled() and future.state is RunState.CANCELLED
    assert client.llen("rq:queue:default") == 0
    assert future.cancel() is False


def test_cancel_a_running_future_kills_it_within_seconds(workers, client) -> None:
    proc = workers.start("default", concurrency=1)
    workers.wait_registered(client)
    future = sleep_then.submit(60, "too late")
    wait_until(lambda: _state(client, future.task_run_id) == "running", message="start")
    started = time.monotonic()
    assert future.cancel() is True
    with pytest.raises(CancelledRun):
        future.result(timeout=10)
    assert time.monotonic() - started < 3
    history = task_runs.get_history(client, future.task_run_id)
    assert [h["state"] for h in history] == ["running", "cancelled"]
    assert identity.submit("next").result(timeout=10) == "next"
    assert proc.poll() is None
    assert client.scard("flowkit:cancelling") == 0


def test_cli_cancel_stops_a_flow_run_and_its_tasks(workers, client) -> None:
    workers.start("default", concurrency=1)
    workers.wait_registered(client)
    outcome: dict[str, object] = {}

    @flow
    def long_haul() -> list:
        futures = [sleep_then.submit(60, i) for i in range(4)]
        return [f.result() for f in futures]

    def run_flow() -> None:
        try:
            outcome["value"] = long_haul()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=run_flow)
    thread.start()
    wait_until(lambda: flow_runs.list_flow_runs(client, state="running"), message="the flow run")
    run_id = flow_runs.list_flow_runs(client)[0]["id"]
    wait_until(lambda: flow_runs.get_flow_run(client, run_id)["n_running"] == "1", message="a task")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "flowkit", "run", "cancel", run_id, "--json"],
                          capture_output=True, text=True, timeout=30, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert '"dropped": 3' in done.stdout and '"stopping": 1' in done.stdout
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert time.monotonic() - started < 5
    assert isinstance(outcome.get("error"), CancelledRun)
    row = flow_runs.get_flow_run(client, run_id)
    assert row["state"] == "cancelled"
    wait_until(lambda: flow_runs.get_flow_run(client, run_id)["n_cancelled"] == "4",
               message="all four task runs cancelled")
    assert flow_runs.get_flow_run(client, run_id)["n_running"] == "0"


def test_cancel_flow_run_from_python(client) -> None:
    futures = identity.map(range(3))  # ad-hoc run, no worker: all queued
    run_id = task_runs.get_task_run(client, futures[0].task_run_id)["flow_run_id"]
    assert flowkit.cancel_flow_run(run_id) == (3, 0)
    assert all(isinstance(f.exception(timeout=5), CancelledRun) for f in futures)
    with pytest.raises(flowkit.FlowkitError, match="no flow run"):
        flowkit.cancel_flow_run("0" * 16)


def test_a_run_left_by_its_driver_closes_when_its_last_task_run_is_cancelled(client,
                                                                            limits) -> None:
    """Regression: cancelling task runs one by one never closed a run that closes by itself
    (the cancel script had its own copy of "end a task run", without the close)."""
    from flowkit.driver import reset_driver

    futures = identity.map(["a", "b"])  # no worker: both stay queued
    run_id = task_runs.get_task_run(client, futures[0].task_run_id)["flow_run_id"]
    reset_driver()  # the driver leaves with work queued: the run closes by itself later
    assert flow_runs.get_flow_run(client, run_id)["state"] == "running"
    for future in futures:
        task_runs.cancel(client, limits, task_run_ids=[future.task_run_id], message="no")
    run = flow_runs.get_flow_run(client, run_id)
    assert (run["state"], run["n_cancelled"], run["n_pending"]) == ("cancelled", "2", "0")
    assert client.zscore("flowkit:flowruns:state:cancelled", run_id) is not None


def test_a_run_left_by_its_driver_completes_when_workers_finish_it(workers, client) -> None:
    from flowkit.driver import reset_driver

    futures = identity.map(["a", "b"])
    run_id = task_runs.get_task_run(client, futures[0].task_run_id)["flow_run_id"]
    reset_driver()
    workers.start("default", concurrency=1, burst=True)
    wait_until(lambda: flow_runs.get_flow_run(client, run_id)["state"] == "completed",
               timeout=20, message="the ad-hoc run to close itself")
    assert flow_runs.get_flow_run(client, run_id)["n_completed"] == "2"
