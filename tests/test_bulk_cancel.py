"""Cancelling a big run is bounded, linear work: 20,000 queued task runs are cancelled with
``flowkit.cancel(futures)`` in one call while another client PINGs the server and a worker
keeps running tasks on another queue. No server call may hold Redis long (measured with
SLOWLOG), no PING waits long, and the queue is left without the cancelled ids."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import pytest

import flowkit
from flowkit.errors import CancelledRun
from flowkit.store import keys

from conftest import wait_until
from tasks_for_tests import identity, sleep_then

pytestmark = pytest.mark.slow

QUEUED = 20_000
#: Longest single server call allowed while cancelling (the issue's bound).
MAX_CALL_MS = 50
#: Longest a concurrent PING may wait.
MAX_PING_MS = 200


#: Another client of the server, in its own process (no GIL shared with the test): PINGs in a
#: loop until its stdin closes, then prints how many it sent, the longest wait in ms and
#: the errors (BUSY or a timeout would be one).
PING_LOOP = """
import sys, threading, time, redis
client = redis.Redis.from_url(sys.argv[1], socket_timeout=10)
stop, longest, count, errors = threading.Event(), 0.0, 0, 0
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
print("ready", flush=True)
while not stop.is_set():
    started = time.perf_counter()
    try:
        client.ping()
    except redis.RedisError:
        errors += 1
    longest = max(longest, time.perf_counter() - started)
    count += 1
    time.sleep(0.001)
print(count, longest * 1000, errors, flush=True)
"""


class PingLoop:
    """Runs PING_LOOP in a subprocess for the duration of a ``with`` block."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.count, self.longest_ms, self.errors = 0, 0.0, 0

    def __enter__(self) -> PingLoop:
        self.proc = subprocess.Popen([sys.executable, "-c", PING_LOOP, self.url],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        return self

    def __exit__(self, *exc: object) -> None:
        out, _ = self.proc.communicate(timeout=30)
        count, longest, errors = out.split()
        self.count, self.longest_ms, self.errors = int(count), float(longest), int(errors)


def _states(client: Any, ids: list[str]) -> dict[str, int]:
    pipe = client.pipeline(transaction=False)
    for task_run_id in ids:
        pipe.hget(keys.task_run(task_run_id), "state")
    counts: dict[str, int] = {}
    for raw in pipe.execute():
        state = raw.decode() if raw else "missing"
        counts[state] = counts.get(state, 0) + 1
    return counts


def test_cancelling_20000_queued_task_runs_never_blocks_redis(workers, client,
                                                              redis_url) -> None:
    bulk = identity.with_options(queue="bulk").map(range(QUEUED))
    # map() returns once its first chunks are queued; the rest follows in the background.
    wait_until(lambda: client.llen(keys.queue("bulk")) == QUEUED, timeout=120,
               message="the whole map queued")
    workers.start("other", concurrency=1)
    workers.wait_registered(client, "other")
    others = sleep_then.with_options(queue="other").map([0.02] * 150, value=1)

    old_threshold = client.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    old_len = client.config_get("slowlog-max-len")["slowlog-max-len"]
    client.config_set("slowlog-log-slower-than", 2000)  # microseconds: log calls over 2 ms
    client.config_set("slowlog-max-len", 10_000)
    client.slowlog_reset()
    pings = PingLoop(redis_url)
    try:
        with pings:
            time.sleep(0.2)
            started = time.perf_counter()
            counts = flowkit.cancel(bulk)
            total = time.perf_counter() - started
            time.sleep(0.2)
    finally:
        slow = client.slowlog_get(10_000)
        client.config_set("slowlog-log-slower-than", old_threshold)
        client.config_set("slowlog-max-len", old_len)

    calls = [(entry["duration"] / 1000, entry["command"][:60]) for entry in slow]
    longest_ms = max((ms for ms, _ in calls), default=0.0)
    print(f"\ncancelled {QUEUED} queued task runs in {total * 1000:.0f} ms; longest server "
          f"call {longest_ms:.1f} ms ({len(calls)} calls over 2 ms); longest PING "
          f"{pings.longest_ms:.1f} ms over {pings.count} PINGs")
    assert counts == flowkit.CancelCounts(cancelled=QUEUED, stopping=0, unchanged=0)
    assert longest_ms < MAX_CALL_MS, sorted(calls, reverse=True)[:5]
    assert pings.errors == 0 and pings.longest_ms < MAX_PING_MS
    assert _states(client, [f.task_run_id for f in bulk]) == {"cancelled": QUEUED}
    assert client.llen(keys.queue("bulk")) == 0
    wait_until(lambda: all(f.done() for f in bulk), timeout=60, message="the futures to resolve")
    with pytest.raises(CancelledRun):
        bulk[-1].result(timeout=1)
    # The worker on the other queue kept working, and crashed nothing.
    assert [f.result(timeout=30) for f in others] == [1] * 150
    assert all(not client.hexists(keys.task_run(f.task_run_id), "crashes") for f in others)
    assert flowkit.cancel(bulk[:10]) == flowkit.CancelCounts(0, 0, 10)
