"""Submits that cannot go through are refused before anything is recorded, and leave nothing."""

from __future__ import annotations

import re
import threading

import pytest

from flowkit import task
from flowkit.driver import reset_driver
from flowkit.errors import ArgumentTooLarge, ConfigurationError, SerializationError, StoreError
from flowkit.store import flow_runs, keys


@task
def measure(data: bytes) -> int:
    return len(data)


@pytest.fixture
def small_limit(client, monkeypatch):
    monkeypatch.setenv("FLOWKIT_MAX_ARGUMENT_BYTES", "10000")
    reset_driver()
    yield 10000
    monkeypatch.delenv("FLOWKIT_MAX_ARGUMENT_BYTES")
    reset_driver()


def _nothing_recorded(client) -> None:
    assert flow_runs.list_flow_runs(client) == []
    assert client.zcard(keys.FLOW_RUNS) == 0
    assert client.keys(keys.TASK_RUN_PREFIX + "*") == []
    assert client.keys("rq:job:*") == []


def test_an_argument_over_the_limit_is_refused_with_its_size_and_the_limit(
        client, small_limit) -> None:
    with pytest.raises(ArgumentTooLarge) as caught:
        measure.submit(b"x" * 20000)
    message = str(caught.value)
    assert isinstance(caught.value, ConfigurationError)
    assert "\n" not in message
    assert "'measure'" in message and "FLOWKIT_MAX_ARGUMENT_BYTES=10000" in message
    assert re.search(r"pickles to 19\.\d KiB \(20\d\d\d bytes\)", message), message
    _nothing_recorded(client)


def test_one_large_call_in_a_map_refuses_the_whole_map(client, small_limit) -> None:
    values = [b"small", b"small", "é" * 6000, b"small"]  # 6000 characters, 12000 UTF-8 bytes
    with pytest.raises(ArgumentTooLarge, match=r"call 3 of 4"):
        measure.map(values)
    _nothing_recorded(client)


def test_an_argument_under_the_limit_goes_through(client, small_limit, worker) -> None:
    assert measure.submit(b"x" * 5000).result(timeout=30) == 5000


def test_an_unpicklable_argument_leaves_no_run(client) -> None:
    with pytest.raises(SerializationError, match="cannot be pickled"):
        measure.submit(threading.Lock())  # type: ignore[arg-type]
    _nothing_recorded(client)


def test_a_submit_redis_refuses_leaves_no_empty_run(client) -> None:
    """The server refuses the 2 MiB call (its bulk length limit is 1 MiB here) after the run
    was recorded: the empty run is removed again."""
    before = client.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    client.config_set("proto-max-bulk-len", 1 << 20)
    try:
        with pytest.raises((StoreError, ConnectionError)):
            measure.submit(b"x" * (2 << 20))
    finally:
        reset_driver()
        client.connection_pool.disconnect()
        client.config_set("proto-max-bulk-len", before)
    _nothing_recorded(client)


def test_a_map_that_fails_midway_leaves_nothing_to_run(client) -> None:
    """The server refuses the 101st call of a map (2 MiB over a 1 MiB bulk limit) after the
    first chunks were queued: the caller gets the error and never sees those futures, so the
    queued part is cancelled instead of running as orphans."""
    from flowkit.store import task_runs

    queue = "nobody-serves-this"
    values = [b"x"] * 200
    values[100] = b"x" * (2 << 20)
    before = client.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    client.config_set("proto-max-bulk-len", 1 << 20)
    try:
        with pytest.raises((StoreError, ConnectionError)):
            measure.with_options(queue=queue).map(values)
    finally:
        client.config_set("proto-max-bulk-len", before)
    prefix = keys.TASK_RUN_PREFIX.encode()
    written = [k[len(prefix):].decode() for k in client.keys(keys.TASK_RUN_PREFIX + "*")
               if b":" not in k[len(prefix):]]  # the runs, not their :history lists
    assert len(written) >= 32  # the first chunks were queued before the refusal
    states = {task_runs.get_task_state(client, i) for i in written}
    assert {s.value for s in states if s is not None} == {"cancelled"}
    reset_driver()
