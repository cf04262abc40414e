"""Contract cases of drivers.lua: heartbeats by the server's clock, the end of a lost
driver's runs, forgetting drivers, and removing an empty ad-hoc run."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit.store import drivers, keys
from flowkit.store.drivers import EndedRun, LostDriver

from library_fixtures import QUEUE, REPLY, observe, seed_flow_run, seed_task_run

#: The library functions these cases cover (test_library_contracts checks every one has one).
DRIVER_CASE_FUNCTIONS = {"driver_beat", "drivers_lost", "driver_run_lost", "driver_forget",
                         "adhoc_discard"}


def server_time(client: Any) -> float:
    seconds, micros = client.time()
    return float(seconds) + micros / 1e6


def lost_driver(client: Any, driver_id: str = "d1", runs: str = "f1", ago: float = 1.0) -> None:
    client.zadd(keys.DRIVERS, {driver_id: server_time(client) - ago})
    client.hset(keys.driver(driver_id), mapping={"label": "host h1 pid 42", "tolerance": "2.0",
                                                 "runs": runs})


def test_a_beat_stamps_the_servers_time_and_returns_the_runs_that_ended(client, limits) -> None:
    seed_flow_run(client, "f1")
    seed_flow_run(client, "f2", state="completed")
    before = server_time(client)
    # "soon" is not written yet (its enqueue is on the way): it stays covered.
    ended = drivers.beat(client, limits, "d1", "host h1 pid 42", 2.0, ["f1", "f2", "soon"])
    assert ended == {"f2"}
    deadline = client.zscore(keys.DRIVERS, "d1")
    assert before + 2.0 <= deadline <= server_time(client) + 2.0
    assert client.hget(keys.driver("d1"), "runs") == b"f1,soon"
    assert client.hget(keys.driver("d1"), "label") == b"host h1 pid 42"


def test_lost_lists_only_drivers_past_their_deadline(client, limits) -> None:
    lost_driver(client, "d1", "f1,f2")
    client.zadd(keys.DRIVERS, {"d2": server_time(client) + 100})
    assert drivers.lost(client, limits) == [LostDriver("d1", ["f1", "f2"])]


def test_a_lost_drivers_run_crashes_and_its_task_runs_are_cancelled(client, limits) -> None:
    seed_flow_run(client, "f1")
    seed_task_run(client, "t1", state="pending", queued=True)
    seed_task_run(client, "t2", state="running", attempt=1)
    lost_driver(client)
    assert drivers.end_lost_run(client, limits, "d1", "f1") == EndedRun(True, 1, 1)
    seen = observe(client, ["t1", "t2"], ["f1"])
    assert seen["flow:f1.state"] == "crashed"
    assert seen["flow:f1.error_type"] == "flowkit.errors.DriverLost"
    assert seen["flow:f1.error_message"].startswith("driver lost: host h1 pid 42 sent no "
                                                    "heartbeat for more than 2.0 s")
    assert seen["index:f1"] == ["crashed"]
    assert seen["task:t1.state"] == "cancelled"
    assert seen[f"queue:{QUEUE}"] == []  # a handful are taken off at once; more: swept
    assert seen["task:t2.state"] == "running" and seen["cancelling"] == ["t2"]
    assert ("flow", "f1", "crashed") in seen["events"]
    # A driver that comes back is told to stop the flow function, once.
    stops = [f for _, f in client.xrange(REPLY) if f.get(b"kind") == b"cancel_flow"]
    assert [f[b"id"] for f in stops] == [b"f1"]
    # A second pass (an earlier one may have stopped halfway) cancels what is left: nothing
    # queued; the running one is flagged again (a set: still one request).
    assert drivers.end_lost_run(client, limits, "d1", "f1") == EndedRun(True, 0, 1)
    assert client.smembers(keys.CANCELLING) == {b"t2"}
    assert len([f for _, f in client.xrange(REPLY) if f.get(b"kind") == b"cancel_flow"]) == 1


@pytest.mark.parametrize("deadline_from_now", [5.0, None], ids=["alive", "unknown"])
def test_a_driver_that_is_not_lost_keeps_its_run(client, limits, deadline_from_now) -> None:
    seed_flow_run(client, "f1")
    seed_task_run(client, "t1", state="pending", queued=True)
    if deadline_from_now is not None:
        client.zadd(keys.DRIVERS, {"d1": server_time(client) + deadline_from_now})
    assert drivers.end_lost_run(client, limits, "d1", "f1") == EndedRun(False, 0, 0)
    seen = observe(client, ["t1"], ["f1"])
    assert seen["flow:f1.state"] == "running" and seen["task:t1.state"] == "pending"


def test_forget_drops_a_lost_driver_but_not_a_live_one_unless_it_left(client, limits) -> None:
    lost_driver(client, "d1")
    client.zadd(keys.DRIVERS, {"d2": server_time(client) + 100})
    client.xadd(keys.reply("d1"), {"kind": "log"})
    assert drivers.forget(client, limits, "d2", only_if_lost=True) is False
    assert drivers.forget(client, limits, "d1", only_if_lost=True) is True
    assert client.exists(keys.driver("d1")) == 0
    assert client.pttl(keys.reply("d1")) > 0  # the unread reply stream expires
    assert drivers.forget(client, limits, "d2", only_if_lost=False) is True
    assert client.zcard(keys.DRIVERS) == 0


def test_only_an_empty_adhoc_run_is_discarded(client, limits) -> None:
    seed_flow_run(client, "f1", kind="adhoc")
    seed_flow_run(client, "f2", kind="adhoc")
    seed_task_run(client, "t1", flow_run_id="f2")
    seed_flow_run(client, "f3")
    assert [drivers.discard_empty_adhoc(client, limits, f) for f in ("f1", "f2", "f3")] == [
        True, False, False]
    assert client.exists(keys.flow_run("f1")) == 0
    assert client.zscore(keys.FLOW_RUNS, "f1") is None
    assert client.zscore(keys.flow_runs_in_state("running"), "f1") is None
    assert client.exists(keys.flow_run("f2")) == 1 and client.exists(keys.flow_run("f3")) == 1
