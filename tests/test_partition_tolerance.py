"""A waiting driver rides out a partition up to FLOWKIT_PARTITION_TOLERANCE_SECONDS, then fails.

Uses the network-namespace rig of tests/test_partition.py (a server host and a client host,
the partition a blackhole route on the server side: replies vanish, nothing resets).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flowkit.embedded import find_server_binary
from test_partition import Hosts
from test_partition import hosts as rig  # noqa: F401  (the fixture, as `rig`)

pytestmark = pytest.mark.slow

#: Submits double(21), waits, and prints what happened and when (wall clock: the test compares
#: it with when it cut the network). The task touches the file named by argv[3], if any, when it
#: starts, so the test can cut the network while the task runs rather than after a guessed sleep.
DRIVER = textwrap.dedent('''
    import json, pathlib, sys, time
    from flowkit import task

    @task(queue=sys.argv[2])
    def double(x: int, pause: float, started: str) -> int:
        if started:
            pathlib.Path(started).touch()
        time.sleep(pause)
        return 2 * x

    try:
        out = {"value": double.submit(21, float(sys.argv[1]), sys.argv[3]).result(timeout=120)}
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    out["at"] = time.time()
    print(json.dumps(out), flush=True)
''')


def _start(hosts: Hosts, tmp_path: Path, **env: str) -> tuple[dict[str, str], list[str]]:
    """Server in its host; the environment and command of drivers in the client host."""
    url = f"redis://{hosts.server_ip}:6379/0"
    hosts.spawn(hosts.server_ns, [find_server_binary(), "--bind", hosts.server_ip, "--port",
                                  "6379", "--save", "", "--appendonly", "no",
                                  "--protected-mode", "no"], dict(os.environ), "server.log")
    full = {**os.environ, "FLOWKIT_REDIS_URL": url, "FLOWKIT_HOME": str(tmp_path / "home"),
            "FLOWKIT_SECRET_KEY": "partition-test-key", "FLOWKIT_ECHO_LOGS": "0", **env}
    ping = [sys.executable, "-c", f"import redis; redis.Redis.from_url({url!r}).ping()"]
    deadline = time.monotonic() + 15
    while hosts.run(hosts.client_ns, ping, full, 10).returncode != 0:
        assert time.monotonic() < deadline, "the server in its namespace did not answer"
        time.sleep(0.1)
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return full, [sys.executable, str(script)]


def _waiting_driver(hosts: Hosts, env: dict[str, str], driver: list[str], pause: float,
                    queue: str, started: Path | str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", hosts.client_ns, *driver, str(pause),
                             queue, str(started)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _outcome(proc: subprocess.Popen[str]) -> tuple[dict, str]:
    out, err = proc.communicate(timeout=120)
    assert out.strip(), err
    return json.loads(out.strip().splitlines()[-1]), err


def test_a_driver_rides_out_a_30_second_partition(rig: Hosts,  # noqa: F811
                                                  tmp_path: Path) -> None:
    hosts = rig
    env, driver = _start(hosts, tmp_path)
    worker = hosts.spawn(hosts.client_ns, [sys.executable, "-m", "flowkit", "worker", "start",
                                           "-q", "partitioned", "-c", "1"], env, "worker.log")
    started = tmp_path / "task-started"
    waiting = _waiting_driver(hosts, env, driver, 4, "partitioned", started)
    # Cut only once the task runs: under a loaded CI box a worker can take more than the 2 s this
    # test used to sleep to connect, and a worker that cannot reach Redis at start exits with one
    # clear error (as it should), which left the driver waiting on a queue nobody served.
    deadline = time.monotonic() + 60
    while not started.exists():
        assert waiting.poll() is None, waiting.communicate()
        assert worker.poll() is None, (tmp_path / "worker.log").read_text()
        assert time.monotonic() < deadline, "the task did not start within 60 s"
        time.sleep(0.05)
    hosts.partition(True)
    # Before, the waiter itself asked Redis whether workers served the queue; under the
    # partition that call failed after its bounded retries (20-30 s) and the error ended the
    # wait. Now the listener thread makes those checks and the waiter only reads the clock.
    time.sleep(30)
    assert waiting.poll() is None, "the waiting driver gave up during the partition"
    hosts.partition(False)
    healed = time.time()
    outcome, err = _outcome(waiting)
    assert outcome.get("value") == 42, (outcome, err)
    assert outcome["at"] - healed < 30, outcome  # resumed soon after the network came back
    assert worker.poll() is None


def test_past_the_tolerance_the_driver_fails_with_one_clear_error(rig: Hosts,  # noqa: F811
                                                                   tmp_path: Path) -> None:
    hosts = rig
    env, driver = _start(hosts, tmp_path, FLOWKIT_PARTITION_TOLERANCE_SECONDS="3")
    # Nobody serves the queue: the run stays queued, the driver waits on it.
    waiting = _waiting_driver(hosts, env, driver, 0, "nobody")
    time.sleep(3.0)
    assert waiting.poll() is None
    hosts.partition(True)
    cut = time.time()
    try:
        outcome, err = _outcome(waiting)
    finally:
        hosts.partition(False)
    assert outcome.get("error") == "StoreConnectionError", (outcome, err)
    assert "FLOWKIT_PARTITION_TOLERANCE_SECONDS=3" in outcome["message"], outcome
    assert hosts.server_ip in outcome["message"]
    assert 3 <= outcome["at"] - cut < 10, outcome
