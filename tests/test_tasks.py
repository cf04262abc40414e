"""Tasks: submit, map, plain calls, options; run by real worker processes."""

from __future__ import annotations

import pytest
import pydantic

import flowkit
from flowkit import task, unmapped
from flowkit.errors import ConfigurationError
from flowkit.states import RunState

from tasks_for_tests import add, identity, square, whoami


def test_submit_returns_future_with_value(worker) -> None:
    future = add.submit(2, 3)
    assert isinstance(future, flowkit.TaskFuture)
    assert future.result(timeout=10) == 5
    assert future.done()
    assert future.state is RunState.COMPLETED
    assert len(future.task_run_id) == 16


def test_map_fans_out_and_keeps_order(worker) -> None:
    futures = square.map(range(50))
    assert [f.result(timeout=20) for f in futures] == [x * x for x in range(50)]


def test_map_with_unmapped_constant(worker) -> None:
    futures = add.map([1, 2, 3], unmapped(10))
    assert [f.result(timeout=10) for f in futures] == [11, 12, 13]
    futures = add.map(a=[1, 2], b=unmapped(100))
    assert [f.result(timeout=10) for f in futures] == [101, 102]


def test_map_rejects_mismatched_lengths(client) -> None:
    with pytest.raises(ConfigurationError, match="different lengths"):
        add.map([1, 2], [1, 2, 3])
    with pytest.raises(ConfigurationError, match="iterable"):
        add.map(1, 2)


def test_plain_call_outside_flow_runs_locally(client) -> None:
    # No worker is running: a local call must not need one.
    assert add(2, 2) == 4
    assert add.fn(3, 4) == 7
    assert client.llen("rq:queue:default") == 0


def test_with_options_returns_copy(client) -> None:
    renamed = add.with_options(name="plus", retries=2, queue="other")
    assert renamed.name == "plus" and renamed.options.retries == 2
    assert add.name == "add" and add.options.retries == 0
    assert renamed.fn is add.fn


def test_decorator_with_and_without_parentheses() -> None:
    @task
    def one() -> int:
        return 1

    @task(name="two-task", retries=1, retry_delay_seconds=[1, 2], timeout_seconds=5,
          tags=["a"], queue="q", log_prints=True, cache_expiration=60, refresh_cache=False)
    def two() -> int:
        return 2

    assert one.name == "one" and two.name == "two-task"
    assert two.options.tags == frozenset({"a"})
    assert two.options.cache_expiration.total_seconds() == 60
    assert one() == 1 and two() == 2


def test_invalid_options_are_rejected() -> None:
    with pytest.raises(ConfigurationError, match="unknown task option"):
        task(retrys=3)
    with pytest.raises(pydantic.ValidationError):
        task(retries=-1)(lambda: None)
    with pytest.raises(pydantic.ValidationError):
        task(queue="has space")(lambda: None)


def test_results_spread_over_executor_processes(workers, client) -> None:
    workers.start("default", concurrency=2)
    workers.start("default", concurrency=2)
    workers.wait_registered(client, count=2)
    pids = {f.result(timeout=30) for f in whoami.map([0.05] * 40)}
    assert len(pids) >= 3, f"expected the work spread over executors, got pids {pids}"


def test_queue_option_routes_to_that_queue(workers, client) -> None:
    on_other = identity.with_options(queue="other")
    workers.start("other", concurrency=1)
    workers.wait_registered(client, queue="other")
    assert on_other.submit("x").result(timeout=10) == "x"
    assert client.hget(f"flowkit:taskrun:{on_other.submit('y').task_run_id}", "queue") == b"other"
