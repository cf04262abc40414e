"""Retries: delays (number, list, backoff, jitter), retry_on, retry_condition_fn, flow retries."""

from __future__ import annotations

import random
import time

import pytest

import flowkit
from flowkit import exponential_backoff, flow, task
from flowkit.retries import delay_before_retry
from flowkit.store import flow_runs, task_runs
from flowkit.store import logs as store_logs

from tasks_for_tests import identity


def _failures(client, future) -> list[dict]:
    return [h for h in task_runs.get_history(client, future.task_run_id) if h.get("error_type")]


@task
def always_fails(kind: str = "connection") -> None:
    raise {"connection": ConnectionError, "value": ValueError}[kind](f"{kind} trouble")


def test_delay_rules_are_prefect_shaped() -> None:
    assert delay_before_retry(2, retries=3, attempt=1) == 2.0
    assert [delay_before_retry([1, 5], 4, a) for a in (1, 2, 3, 4)] == [1.0, 5.0, 5.0, 5.0]
    backoff = exponential_backoff(1, max_delay=5)
    assert backoff(4) == [1, 2, 4, 5]
    assert [delay_before_retry(backoff, 4, a) for a in (1, 2, 3, 4)] == [1, 2, 4, 5]
    rng = random.Random(7)
    spread = {round(delay_before_retry(10, 1, 1, jitter_factor=0.5, rng=rng), 6)
              for _ in range(50)}
    assert len(spread) == 50 and min(spread) >= 5 and max(spread) <= 15


def test_backoff_delays_are_applied_between_attempts(worker, client) -> None:
    flaky = always_fails.with_options(retries=3,
                                      retry_delay_seconds=exponential_backoff(0.1))
    future = flaky.submit()
    with pytest.raises(ConnectionError):
        future.result(timeout=30)
    failures = _failures(client, future)
    assert [f["retry_in"] for f in failures[:3]] == [0.1, 0.2, 0.4]
    assert "retry_in" not in failures[3]
    history = task_runs.get_history(client, future.task_run_id)
    starts = [h["ts"] for h in history if h["state"] == "running"]
    ends = [h["ts"] for h in history if h["state"] == "failed"]
    waits = [start - end for end, start in zip(ends, starts[1:])]
    assert all(w >= d - 0.01 for w, d in zip(waits, [0.1, 0.2, 0.4])), waits
    assert all(w < d + 1.0 for w, d in zip(waits, [0.1, 0.2, 0.4])), waits


def test_jitter_really_varies_the_delay(worker, client) -> None:
    jittery = always_fails.with_options(retries=5, retry_delay_seconds=0.2,
                                        retry_jitter_factor=0.5)
    future = jittery.submit()
    with pytest.raises(ConnectionError):
        future.result(timeout=30)
    delays = [f["retry_in"] for f in _failures(client, future) if "retry_in" in f]
    assert len(delays) == 5 and len(set(delays)) == 5
    assert all(0.1 <= d <= 0.3 for d in delays), delays


def test_retry_on_limits_which_errors_retry(worker, client) -> None:
    picky = always_fails.with_options(retries=2, retry_on=(ConnectionError,))
    value_error = picky.submit("value")
    with pytest.raises(ValueError):
        value_error.result(timeout=15)
    assert client.hget(f"flowkit:taskrun:{value_error.task_run_id}", "attempt") == b"1"
    connection_error = picky.submit("connection")
    with pytest.raises(ConnectionError):
        connection_error.result(timeout=15)
    assert client.hget(f"flowkit:taskrun:{connection_error.task_run_id}", "attempt") == b"3"


def test_retry_condition_fn_sees_task_run_and_state(worker, client) -> None:
    def only_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
        return task.name == "always_fails" and task_run.attempt < 2 and \
            "connection" in state.message

    careful = always_fails.with_options(retries=5, retry_condition_fn=only_transient)
    future = careful.submit()
    with pytest.raises(ConnectionError):
        future.result(timeout=15)
    assert client.hget(f"flowkit:taskrun:{future.task_run_id}", "attempt") == b"2"


def test_a_waiting_retry_holds_no_executor_slot(workers, client) -> None:
    workers.start("default", concurrency=1)
    workers.wait_registered(client)
    slow_retry = always_fails.with_options(retries=1, retry_delay_seconds=1.5).submit()
    time.sleep(0.5)  # the first attempt failed; the retry waits in Redis
    started = time.monotonic()
    assert identity.submit("not blocked").result(timeout=10) == "not blocked"
    assert time.monotonic() - started < 1.0
    with pytest.raises(ConnectionError):
        slow_retry.result(timeout=15)


def test_user_code_can_ask_for_a_retry(worker, client, tmp_path) -> None:
    @task(retries=2)
    def poll(path: str) -> str:
        with open(path, "a") as f:
            f.write(".")
        if len(open(path).read()) < 2:
            raise flowkit.Retry("not ready yet", delay_seconds=0.05)
        return "ready"

    future = poll.submit(str(tmp_path / "polls"))
    assert future.result(timeout=15) == "ready"
    [failure] = _failures(client, future)
    assert failure["error_type"] == "flowkit.errors.Retry" and failure["retry_in"] == 0.05


def test_flow_retries_run_the_flow_again(worker, client, tmp_path) -> None:
    marker = tmp_path / "flow-attempts"

    @flow(retries=2, retry_delay_seconds=0.05)
    def fragile() -> str:
        with open(marker, "a") as f:
            f.write(".")
        if len(marker.read_text()) < 2:
            identity.submit("work of the failed attempt").result()
            raise RuntimeError("first attempt breaks")
        return identity("second attempt")

    assert fragile() == "second attempt"
    [row] = flow_runs.list_flow_runs(client)
    assert row["state"] == "completed" and row["attempt"] == "2"
    messages = [f["message"] for _, f in store_logs.read_logs(client, row["id"])]
    assert any("attempt 1 failed with RuntimeError: first attempt breaks" in m for m in messages)
    assert row["n_completed"] == "2"  # the task runs of both attempts stay on record
