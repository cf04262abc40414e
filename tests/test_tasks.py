"""Tasks: submit, map, plain calls, options; run by real worker processes."""

from __future__ import annotations

import pydantic
import pytest

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


def test_timeout_seconds_stops_the_attempt(worker, client) -> None:
    from flowkit.errors import TaskTimeout

    from tasks_for_tests import sleep_then

    limited = sleep_then.with_options(timeout_seconds=0.3)
    future = limited.submit(5, None)
    with pytest.raises(TaskTimeout, match="timeout_seconds=0.3"):
        future.result(timeout=10)
    assert future.state is RunState.TIMED_OUT
    assert add.submit(1, 1).result(timeout=10) == 2  # the executor keeps serving


def test_retries_run_the_task_again_until_it_succeeds(worker, client, tmp_path) -> None:
    from flowkit.store import task_runs

    @task(retries=3, retry_delay_seconds=0.05)
    def flaky(path: str) -> int:
        with open(path, "a") as f:
            f.write("x")
        with open(path) as f:
            attempts = len(f.read())
        if attempts < 3:
            raise ConnectionError(f"attempt {attempts} failed")
        return attempts

    future = flaky.submit(str(tmp_path / "attempts"))
    assert future.result(timeout=15) == 3
    history = task_runs.get_history(client, future.task_run_id)
    outcomes = [(h["state"], h["attempt"]) for h in history if h["state"] != "running"]
    assert outcomes == [("failed", 1), ("failed", 2), ("completed", 3)]
    assert [h.get("retry_in") for h in history if h["state"] == "failed"] == [0.05, 0.05]
    assert "attempt 2 failed" in history[3]["message"]


def test_retries_exhausted_raise_the_last_error(worker, client) -> None:
    @task(retries=1)
    def always_fails() -> None:
        raise ConnectionError("still down")

    future = always_fails.submit()
    with pytest.raises(ConnectionError, match="still down"):
        future.result(timeout=15)
    assert client.hget(f"flowkit:taskrun:{future.task_run_id}", "attempt") == b"2"


def test_parameters_preview_is_what_json_writes() -> None:
    # The preview of scalar calls skips json.dumps per call; it must write the same text.
    import json

    @task
    def many(a, b=None, c=None, d=None):  # type: ignore[no-untyped-def]
        return a

    calls = [(1,), (-7, 2.5, True, None), ("é\n\"q",), (float("nan"), float("-inf"), 10**30),
             ("x" * 199,), (False, 0.1, "", 3)]
    for args in calls:
        assert many._preview(args, {}) == json.dumps(dict(zip(many._param_names, args)))
    # Anything else takes the general, masking path: long text is truncated there.
    assert many._preview(("y" * 300,), {}).startswith('{"a": "yyy')
    assert many._preview(([1, 2],), {}) == '{"a": [1, 2]}'


def test_map_calls_of_one_mapped_argument_and_of_several() -> None:
    from flowkit._map_submit import MapCalls

    one = MapCalls.of_map("t", ([10, 20, 30],), {})
    assert [one[i] for i in range(3)] == [((10,), {}), ((20,), {}), ((30,), {})]
    one.release(0, 2)
    assert one[2] == ((30,), {})
    mixed = MapCalls.of_map("t", ([1, 2], unmapped([9])), {"k": (5, 6)})
    assert [mixed[i] for i in range(2)] == [((1, [9]), {"k": 5}), ((2, [9]), {"k": 6})]
