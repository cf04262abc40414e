"""A network partition between workers/drivers and Redis, in network namespaces the test makes.

Two namespaces joined by a veth pair: one runs the server, the other a worker and the driver
scripts. Neither has a default route; all traffic starts inside them (this process only runs
``ip netns exec``). The partition is a blackhole route on the server side: packets arrive and
replies vanish, as when a switch between two racks dies, so nothing fails fast with a reset;
only the clients' own timeouts can end their calls.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.embedded import find_server_binary

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent('''
    import json, pathlib, sys, time
    from flowkit import task

    @task(queue="partitioned")
    def double(x: int, pause: float, started: str) -> int:
        if started:
            pathlib.Path(started).touch()  # tells the test the task runs
        time.sleep(pause)
        return 2 * x

    started = time.monotonic()
    try:
        marker = sys.argv[2] if len(sys.argv) > 2 else ""
        out = {"value": double.submit(21, float(sys.argv[1]), marker).result(timeout=120)}
    except Exception as exc:
        out = {"error": type(exc).__name__, "message": str(exc)}
    out["seconds"] = time.monotonic() - started
    print(json.dumps(out))
''')


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


class Hosts:
    """Two network namespaces, a server host and a client host, on 10.251.<n>.0/24."""

    def __init__(self, tmp: Path) -> None:
        tag = secrets.token_hex(3)
        self.server_ns, self.client_ns = f"fks-{tag}", f"fkc-{tag}"
        subnet = int(tag[:2], 16)
        self.server_ip, self.client_ip = f"10.251.{subnet}.1", f"10.251.{subnet}.2"
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def create(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("link", "add", "vs", "netns", self.server_ns, "type", "veth",
            "peer", "name", "vc", "netns", self.client_ns)
        for ns, dev, addr in ((self.server_ns, "vs", self.server_ip),
                              (self.client_ns, "vc", self.client_ip)):
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up")

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        for ns in (self.server_ns, self.client_ns):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)

    def spawn(self, ns: str, cmd: list[str], env: dict[str, str], log: str
              ) -> subprocess.Popen[bytes]:
        with open(self.tmp / log, "wb") as out:
            proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], env=env, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def run(self, ns: str, cmd: list[str], env: dict[str, str], timeout: float
            ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], env=env, capture_output=True,
                              text=True, timeout=timeout)

    def partition(self, on: bool) -> None:
        """Blackhole the server's replies to the client host (or lift it)."""
        _ip("-n", self.server_ns, "route", "add" if on else "del", "blackhole",
            f"{self.client_ip}/32")


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[Hosts]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("network namespaces need root and iproute2 (`ip`); run the suite as root")
    made = Hosts(tmp_path)
    try:
        made.create()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        made.destroy()
        pytest.skip(f"cannot create network namespaces here ({exc}): the kernel or sandbox "
                    "does not allow it")
    yield made
    made.destroy()


def test_partition_bounds_every_call_and_the_worker_recovers(hosts: Hosts, tmp_path: Path):
    password = secrets.token_hex(8)
    url = f"redis://:{password}@{hosts.server_ip}:6379/0"
    hosts.spawn(hosts.server_ns, [find_server_binary(), "--bind", hosts.server_ip, "--port",
                                  "6379", "--requirepass", password, "--save", "",
                                  "--appendonly", "no", "--protected-mode", "no"],
                dict(os.environ), "server.log")
    env = {**os.environ, "FLOWKIT_REDIS_URL": url, "FLOWKIT_HOME": str(tmp_path / "home"),
           "FLOWKIT_SECRET_KEY": "partition-test-key", "FLOWKIT_ECHO_LOGS": "0"}
    ping = [sys.executable, "-c", f"import redis; redis.Redis.from_url({url!r}).ping()"]
    deadline = time.monotonic() + 15
    while hosts.run(hosts.client_ns, ping, env, 10).returncode != 0:
        assert time.monotonic() < deadline, "the server in its namespace did not answer"
        time.sleep(0.1)
    worker = hosts.spawn(hosts.client_ns, [sys.executable, "-m", "flowkit", "worker", "start",
                                           "-q", "partitioned", "-c", "1"], env, "worker.log")
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    driver = [sys.executable, str(script)]

    def drive(pause: float = 0.0) -> dict:
        done = hosts.run(hosts.client_ns, [*driver, str(pause)], env, 120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert drive()["value"] == 42  # connected: the worker in the other host serves it

    # A driver waiting on a task that runs through the partition (its connections are open
    # when the network goes).
    running = tmp_path / "task-started"
    launched = time.monotonic()
    in_flight = subprocess.Popen(["ip", "netns", "exec", hosts.client_ns, *driver, "4",
                                  str(running)],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True)
    deadline = time.monotonic() + 60  # submitted and running on the worker, however loaded
    while not running.exists():
        assert in_flight.poll() is None, in_flight.communicate()
        assert time.monotonic() < deadline, "the task did not start within 60 s"
        time.sleep(0.05)
    hosts.partition(True)
    cut_at = time.monotonic()
    cut = drive()
    # A new call that cannot reach Redis says so, naming it (password hidden), within bounded
    # time (connect and socket timeouts with bounded retries) instead of hanging for minutes.
    assert cut.get("error") == "StoreConnectionError", cut
    assert hosts.server_ip in cut["message"] and password not in cut["message"]
    assert cut["seconds"] < 30, cut
    time.sleep(max(0.0, 10 - (time.monotonic() - cut_at)))  # longer than every socket timeout
    assert worker.poll() is None, "the worker died during the partition"
    assert in_flight.poll() is None, "the waiting driver gave up during the partition"

    hosts.partition(False)
    out, err = in_flight.communicate(timeout=60)
    waited = json.loads(out.strip().splitlines()[-1])
    # Nothing was lost: the worker kept the outcome until Redis was back, the driver kept
    # waiting, and the result arrived soon after the network healed.
    assert waited.get("value") == 42, (waited, err)
    assert waited["seconds"] < (cut_at - launched) + 10 + 20, waited
    healed = drive()
    assert healed.get("value") == 42, healed
    assert healed["seconds"] < 30, healed
    assert worker.poll() is None
