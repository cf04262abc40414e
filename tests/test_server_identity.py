"""The server's identity and the lost-state verdict, against the session's server."""

from __future__ import annotations

import time

import pytest
import redis

from flowkit._lost_state import LostStateWatch
from flowkit.errors import RunLost
from flowkit.store import keys, server

from tasks_for_tests import identity


def test_the_epoch_marker_is_written_once_and_adopted_after(client: redis.Redis) -> None:
    first = server.establish_identity(client)
    again = server.establish_identity(client)
    assert first.epoch and again == first
    assert client.ttl(keys.EPOCH) == -1  # no expiry: it goes only with the data
    assert first.run_id == client.info("server")["run_id"]
    assert server.read_identity(client) == first


def test_a_deleted_run_is_lost_on_the_second_check_in_a_row(client: redis.Redis) -> None:
    parked = identity.with_options(queue="nobody").submit(1)
    watch = LostStateWatch(client, server.establish_identity(client))
    assert watch.check([parked.task_run_id]) is None
    client.delete(keys.task_run(parked.task_run_id))  # as an eviction or a stray DEL would
    assert watch.check([parked.task_run_id]) is None  # once may be a submit still writing
    verdict = watch.check([parked.task_run_id])
    assert verdict is not None and verdict.lost == [parked.task_run_id]
    assert "deleted or evicted" in verdict.cause and not verdict.everything


def test_a_waiting_driver_gets_run_lost_for_a_deleted_run(client: redis.Redis) -> None:
    parked = identity.with_options(queue="nobody").submit(1)
    kept = identity.with_options(queue="nobody").submit(2)
    client.delete(keys.task_run(parked.task_run_id))
    started = time.monotonic()
    with pytest.raises(RunLost, match="no longer has this task run"):
        parked.result(timeout=10)
    assert time.monotonic() - started < 4
    assert not kept.done()
