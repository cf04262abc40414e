"""Flows: validated parameters, return values, failures, timeouts, logs, run records."""

from __future__ import annotations

import time

import pydantic
import pytest

from flowkit import flow, get_run_logger
from flowkit.errors import ConfigurationError, FlowTimeout
from flowkit.store import flow_runs, task_runs
from flowkit.store import logs as store_logs

from tasks_for_tests import CustomError, add, chatty, fail, square


@flow
def total_of_squares(n: int) -> int:
    return sum(square.map(range(n)) and [f.result() for f in square.map(range(n))])


@flow(name="adder", log_prints=True)
def adder(a: int, b: int = 1) -> int:
    print(f"adding {a} and {b}")
    return add(a, b)


@flow
def fails_inside() -> None:
    fail("broken on purpose")


@flow
def fire_and_forget_failure() -> str:
    fail.submit("nobody looked")
    return "returned"


@flow
def handles_failure() -> str:
    try:
        fail.submit("handled").result()
    except CustomError:
        return "recovered"
    return "unreachable"


def test_flow_returns_value_computed_on_workers(worker, client) -> None:
    assert adder(2, 3) == 5
    assert total_of_squares(4) == 0 + 1 + 4 + 9


def test_flow_parameters_are_coerced(worker, client) -> None:
    assert adder("3", b="4") == 7


def test_invalid_parameters_raise_before_anything_is_queued(client) -> None:
    with pytest.raises(pydantic.ValidationError) as info:
        adder("abc")
    assert "a" in str(info.value) and "int" in str(info.value)
    assert client.zcard("flowkit:flowruns") == 0
    assert client.llen("rq:queue:default") == 0


def test_missing_and_unknown_parameters(client) -> None:
    with pytest.raises(pydantic.ValidationError, match="Field required"):
        adder()
    with pytest.raises(TypeError, match="unexpected keyword argument 'c'"):
        adder(1, c=2)
    assert client.zcard("flowkit:flowruns") == 0


def test_validation_can_be_turned_off(worker, client) -> None:
    @flow(validate_parameters=False)
    def concat(a: int, b: int) -> str:
        return a + b  # type: ignore[return-value,operator]

    assert concat("x", "y") == "xy"


def test_flow_run_record_and_task_counts(worker, client) -> None:
    assert adder(1, 1) == 2
    [row] = flow_runs.list_flow_runs(client)
    assert row["name"] == "adder" and row["state"] == "completed"
    assert row["n_completed"] == "1" and row["n_total"] == "1"
    assert row["parameters"] == '{"a": 1, "b": 1}'
    [task_run] = task_runs.get_task_runs(client, row["id"])
    assert task_run["task_name"] == "add" and task_run["state"] == "completed"
    states = [h["state"] for h in task_runs.get_history(client, task_run["id"])]
    assert states == ["running", "completed"]


def test_task_failure_fails_the_flow_with_the_task_exception(worker, client) -> None:
    with pytest.raises(CustomError, match="broken on purpose"):
        fails_inside()
    [row] = flow_runs.list_flow_runs(client)
    assert row["state"] == "failed"
    assert row["error_type"] == "tasks_for_tests.CustomError"
    assert flow_runs.list_flow_runs(client, state="failed")[0]["id"] == row["id"]
    assert flow_runs.list_flow_runs(client, state="completed") == []


def test_unobserved_task_failure_fails_the_flow(worker, client) -> None:
    with pytest.raises(CustomError, match="nobody looked"):
        fire_and_forget_failure()


def test_handled_task_failure_lets_the_flow_complete(worker, client) -> None:
    assert handles_failure() == "recovered"
    assert flow_runs.list_flow_runs(client)[0]["state"] == "completed"


def test_flow_timeout(client) -> None:
    @flow(timeout_seconds=0.3)
    def slow() -> None:
        time.sleep(5)

    started = time.monotonic()
    with pytest.raises(FlowTimeout, match="timeout_seconds=0.3"):
        slow()
    assert time.monotonic() - started < 3
    assert flow_runs.list_flow_runs(client)[0]["state"] == "timed_out"


def test_invalid_flow_options() -> None:
    with pytest.raises(ConfigurationError, match="unknown flow option"):
        flow(retires=1)
    with pytest.raises(ConfigurationError):
        flow(timeout_seconds=0)(lambda: None)


def test_subflow_records_parent(worker, client) -> None:
    @flow
    def parent() -> int:
        return adder(1, 2)

    assert parent() == 3
    by_name = {r["name"]: r for r in flow_runs.list_flow_runs(client)}
    assert by_name["adder"]["parent"] == by_name["parent"]["id"]


def test_logs_and_prints_are_stored_and_echoed(worker, client, capfd) -> None:
    @flow(log_prints=True)
    def talk() -> int:
        get_run_logger().info("flow says hi")
        print("flow prints")
        return chatty(3)

    assert talk() == 3
    [row] = [r for r in flow_runs.list_flow_runs(client) if r["name"] == "talk"]
    messages = [fields["message"] for _, fields in store_logs.read_logs(client, row["id"])]
    assert messages[:2] == ["flow says hi", "flow prints"]
    assert messages[2:] == ["line 1 of 3", "line 2 of 3", "line 3 of 3", "printed 3"]
    err = capfd.readouterr().err
    assert "flow says hi" in err and "line 2 of 3" in err and "printed 3" in err


def test_run_flow_runs_a_recorded_flow_run_as_its_driver(worker, client, limits) -> None:
    """What a worker running a deployment's flow run does: the run exists (SCHEDULED) before
    its driver starts; run_flow validates the parameters and runs it under that id."""
    from flowkit.flow_engine import run_flow
    from flowkit.states import RunState

    flow_runs.create_flow_run(client, limits, "deployedrun00001", "adder",
                              state=RunState.SCHEDULED)
    assert run_flow(adder, {"a": "2", "b": 5}, "deployedrun00001") == 7
    row = flow_runs.get_flow_run(client, "deployedrun00001")
    assert row["state"] == "completed" and row["n_total"] == "1"
    assert client.zscore("flowkit:flowruns:state:scheduled", "deployedrun00001") is None
    [task_run] = task_runs.get_task_runs(client, "deployedrun00001")
    assert task_run["state"] == "completed"


def test_run_flow_refuses_bad_parameters_before_recording_anything(client) -> None:
    from flowkit.flow_engine import run_flow

    with pytest.raises(pydantic.ValidationError):
        run_flow(adder, {"a": "not a number"})
    assert flow_runs.list_flow_runs(client) == []
