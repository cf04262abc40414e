"""Futures: dependencies between tasks, wait(), as_completed(), exception round trips."""

from __future__ import annotations

import time

import pytest

import flowkit
from flowkit import flow, task
from flowkit.errors import TaskFailed, TaskTimeout, UpstreamFailed
from flowkit.states import RunState
from flowkit.store import task_runs

from tasks_for_tests import CustomError, add, fail, identity, sleep_then, square


def test_future_passed_to_downstream_task_is_a_dependency(worker, client) -> None:
    slow = sleep_then.submit(0.3, 20)
    downstream = add.submit(slow, 1)
    # Held in the driver, not queued, while the upstream runs.
    assert client.hget(f"rq:job:{downstream.task_run_id}", "status") == b"deferred"
    assert downstream.result(timeout=10) == 21
    upstream = client.hget(f"flowkit:taskrun:{downstream.task_run_id}", "upstream")
    assert upstream == slow.task_run_id.encode()


def test_futures_nested_in_lists_are_resolved(worker, client) -> None:
    parts = square.map([1, 2, 3])
    total = identity.submit(parts)
    assert total.result(timeout=10) == [1, 4, 9]


def test_chain_inside_a_flow(worker, client) -> None:
    @flow
    def chain(x: int) -> int:
        a = add.submit(x, 1)
        b = add.submit(a, 1)
        c = add.submit(b, a)
        return c.result()

    assert chain(1) == 5


def test_upstream_failure_fails_downstream_without_running_it(worker, client) -> None:
    bad = fail.submit("upstream broke")
    downstream = add.submit(bad, 1)
    with pytest.raises(UpstreamFailed, match="upstream task 'fail'"):
        downstream.result(timeout=10)
    assert downstream.state is RunState.FAILED
    record = task_runs.get_task_run(client, downstream.task_run_id)
    assert record is not None and record["attempt"] == "0"
    assert record["error_type"] == "flowkit.errors.UpstreamFailed"


def test_exception_type_message_and_remote_traceback(worker, client) -> None:
    future = fail.submit("precise message")
    with pytest.raises(CustomError) as info:
        future.result(timeout=10)
    exc = info.value
    assert str(exc) == "precise message"
    assert "tasks_for_tests.py" in exc.remote_traceback  # type: ignore[attr-defined]
    assert 'raise CustomError(message)' in exc.remote_traceback  # type: ignore[attr-defined]
    assert any("Remote traceback" in note for note in exc.__notes__)
    assert future.state is RunState.FAILED
    assert isinstance(future.exception(), CustomError)


def test_builtin_exception_round_trip(worker, client) -> None:
    @task
    def divide(a: int, b: int) -> float:
        return a / b

    with pytest.raises(ZeroDivisionError, match="division by zero"):
        divide.submit(1, 0).result(timeout=10)


def test_exception_that_cannot_be_rebuilt_becomes_task_failed(worker, client) -> None:
    @task
    def raise_unpicklable() -> None:
        class Local(Exception):
            def __reduce__(self):  # type: ignore[no-untyped-def]
                raise TypeError("no pickling")
        raise Local("local trouble")

    with pytest.raises(TaskFailed, match="Local: local trouble") as info:
        raise_unpicklable.submit().result(timeout=10)
    assert "local trouble" in info.value.remote_traceback


def test_result_timeout_leaves_the_run_going(worker, client) -> None:
    future = sleep_then.submit(1.0, "late")
    with pytest.raises(TaskTimeout, match="did not finish within 0.1"):
        future.result(timeout=0.1)
    assert future.result(timeout=10) == "late"


def _both_executors_up() -> None:
    """The worker registers before its executors have imported everything: until both run,
    tasks meant for the second wait for the first (orders asserted below would be luck)."""
    from tasks_for_tests import whoami

    pids = [f.result(timeout=20) for f in whoami.map([0.3, 0.3])]
    assert len(set(pids)) == 2, pids


def test_wait_and_as_completed(worker, client) -> None:
    _both_executors_up()
    futures = [sleep_then.submit(d, d) for d in (0.6, 0.05, 0.3)]
    order = [f.result() for f in flowkit.as_completed(futures, timeout=10)]
    assert order == [0.05, 0.3, 0.6]
    done, not_done = flowkit.wait([sleep_then.submit(0.05, 1), sleep_then.submit(0.05, 2)],
                                  timeout=10)
    assert len(done) == 2 and not not_done


def test_wait_timeout_reports_unfinished(worker, client) -> None:
    slow = sleep_then.submit(2, None)
    started = time.monotonic()
    done, not_done = flowkit.wait([slow], timeout=0.2)
    assert not done and not_done == {slow}
    assert time.monotonic() - started < 1.5
    with pytest.raises(TaskTimeout):
        list(flowkit.as_completed([slow], timeout=0.1))


def test_slow_tasks_after_fast_ones_still_spread_over_executors(worker, client) -> None:
    # Fast tasks teach executors to claim in batches; a slow task must not keep the rest of
    # its batch waiting while another executor idles.
    assert sum(f.result(timeout=20) for f in square.map(range(300))) == sum(
        x * x for x in range(300))
    from tasks_for_tests import whoami

    pids = [f.result(timeout=20) for f in whoami.map([0.4] * 4)]
    assert len(set(pids)) == 2, pids
