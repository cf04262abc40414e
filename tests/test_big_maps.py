"""Maps larger than what ``map()`` queues itself: the rest goes out from a background thread,
in order, and a failure or an interrupt midway still leaves nothing to run."""

from __future__ import annotations

import pytest

import flowkit
from flowkit import task
from flowkit._interrupts import cancel_after_interrupt
from flowkit._map_submit import SYNC_RUNS
from flowkit.driver import get_driver, reset_driver
from flowkit.errors import ArgumentTooLarge, CancelledRun
from flowkit.states import RunState
from flowkit.store import flow_runs, keys, task_runs

from conftest import wait_until
from tasks_for_tests import square

#: More calls than map() queues itself: several background chunks.
BIG = SYNC_RUNS + 2000


@task
def measure(data: bytes) -> int:
    return len(data)


def _written(client) -> list[str]:
    prefix = keys.TASK_RUN_PREFIX.encode()
    return [k[len(prefix):].decode() for k in client.keys(keys.TASK_RUN_PREFIX + "*")
            if b":" not in k[len(prefix):]]


def test_a_map_queued_in_the_background_returns_every_result_in_order(worker) -> None:
    futures = square.map(range(BIG))
    assert len(futures) == BIG
    assert [f.result(timeout=120) for f in futures] == [x * x for x in range(BIG)]


def test_a_late_chunk_refused_ends_the_whole_map_and_cancels_what_was_queued(
        client, monkeypatch) -> None:
    monkeypatch.setenv("FLOWKIT_MAX_ARGUMENT_BYTES", "10000")
    reset_driver()
    values = [b"x"] * BIG
    values[SYNC_RUNS + 1500] = b"x" * 20000  # in a background chunk
    futures = measure.with_options(queue="nobody-serves-this").map(values)
    with pytest.raises(ArgumentTooLarge) as caught:
        futures[0].result(timeout=30)
    message = str(caught.value)
    assert f"call {SYNC_RUNS + 1501} of {BIG}" in message and "cancelled" in message
    assert flowkit.wait(futures, timeout=10).not_done == set()
    assert all(f.state is RunState.FAILED for f in futures)
    written = _written(client)
    assert SYNC_RUNS <= len(written) < BIG  # queued up to the refused chunk, not after
    wait_until(lambda: {task_runs.get_task_state(client, i) for i in written}
               == {RunState.CANCELLED}, timeout=20, message="every queued run cancelled")
    reset_driver()
    monkeypatch.delenv("FLOWKIT_MAX_ARGUMENT_BYTES")


def test_an_interrupt_while_chunks_go_out_leaves_nothing_queued_or_running(client) -> None:
    futures = square.with_options(queue="nobody-serves-this").map(range(20 * BIG))
    driver = get_driver()
    cancel_after_interrupt(driver)  # what a Ctrl-C outside flows does
    assert not driver.submissions
    # Never sent: ended here at once; queued: ended by their cancel's replies.
    assert flowkit.wait(futures, timeout=20).not_done == set()
    with pytest.raises(CancelledRun):
        futures[-1].result(timeout=5)
    assert len(flow_runs.list_flow_runs(client)) == 1
    written = _written(client)
    assert len(written) < 20 * BIG  # it stopped midway
    wait_until(lambda: {task_runs.get_task_state(client, i) for i in written}
               == {RunState.CANCELLED}, timeout=20, message="every queued run cancelled")
    assert client.llen(keys.queue("nobody-serves-this")) == 0
    assert len(_written(client)) == len(written)  # nothing went out after the interrupt


def test_a_flow_gets_every_result_of_a_map_still_queueing(worker) -> None:
    @flowkit.flow
    def total(n: int) -> int:
        return sum(f.result(timeout=120) for f in square.map(range(n)))

    assert total(BIG) == sum(x * x for x in range(BIG))
