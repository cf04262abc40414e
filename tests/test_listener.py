"""The driver's reply listener trims what it has read: at once when its driver waits for
nothing more, and when the stream goes quiet (a finished map's replies are megabytes)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from flowkit import _listener
from flowkit._listener import ReplyListener

from conftest import wait_until

#: Entries per stream node (the server's stream-node-max-entries): an approximate trim
#: drops whole nodes, never the one holding the last entry read.
NODE = 100


def _add(client: redis.Redis, stream: str, n: int) -> None:
    pipe = client.pipeline()
    for i in range(n):
        pipe.xadd(stream, {"kind": "log", "i": i})
    pipe.execute()


@pytest.mark.parametrize("settled", [True, False])
def test_a_settled_driver_trims_what_it_read_at_once(client, settled: bool) -> None:  # type: ignore[no-untyped-def]
    client.config_set("stream-node-max-entries", NODE)
    stream = f"flowkit:reply:test-settled-{settled}"
    _add(client, stream, 3 * NODE + 10)
    seen: list[Any] = []
    listener = ReplyListener(client, stream, seen.append, settled=lambda: settled)
    listener._trimmed_at = time.monotonic()  # just trimmed: only being settled trims now
    listener._take(client.xrange(stream))
    assert len(seen) == 3 * NODE + 10
    assert client.xlen(stream) == (10 if settled else 3 * NODE + 10)


def test_a_quiet_stream_is_trimmed_of_what_was_read(client, redis_url,  # type: ignore[no-untyped-def]
                                                    monkeypatch) -> None:
    client.config_set("stream-node-max-entries", NODE)
    monkeypatch.setattr(_listener, "TRIM_SECONDS", 3600.0)  # no trim for the time it took
    stream = "flowkit:reply:test-quiet"
    seen: list[Any] = []
    listener = ReplyListener(redis.Redis.from_url(redis_url), stream, seen.append,
                             settled=lambda: False)  # futures still pending
    listener._trimmed_at = time.monotonic()
    listener.start()
    try:
        _add(client, stream, 2 * NODE + 10)
        wait_until(lambda: len(seen) == 2 * NODE + 10, message="every entry handled")
        wait_until(lambda: client.xlen(stream) == 10, message="the stream trimmed")
    finally:
        listener.stop()
