"""A worker cut off from Redis: it notices within one lease, kills what it can no longer renew,
logs the change of contact once (not a line per duty per tick) and recovers when Redis is back.

The cut is a server of the test's own, either SIGSTOPped (connections stay open and requests
are accepted by the kernel, but nothing answers, as when a switch between racks dies; only
the clients' timeouts end their calls) or stopped (every call is refused at once, and a busy
retry loop would show as a flood of log lines).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from flowkit import task
from flowkit.driver import reset_driver
from flowkit.embedded import _started, free_port, start_server
from flowkit.settings import get_settings
from flowkit.store import task_runs

from conftest import alive, children, wait_until

pytestmark = pytest.mark.slow

LEASE = 3.0
ENV = {"FLOWKIT_LEASE_SECONDS": str(LEASE), "FLOWKIT_HEARTBEAT_SECONDS": "0.5",
       "FLOWKIT_SOCKET_TIMEOUT": "1", "FLOWKIT_CONNECT_TIMEOUT": "0.5"}


def client_for(url: str):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(url)


@task
def long_first_time(path: str) -> str:
    """Record this process's pid; the first execution hangs, later ones return at once."""
    first = not os.path.exists(path)
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    if first:
        time.sleep(120)
    return "ran again"


class OwnServer:
    """The test's own server, cut off by freezing it (SIGSTOP: nothing answers, calls time
    out) or by stopping it (connections refused), then healed; its AOF keeps the state."""

    def __init__(self, home: Path) -> None:
        self.home, self.port = home, free_port()
        self.info = start_server(home, port=self.port, detach=False)
        self.frozen = False

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return next(p for p in _started if p.pid == self.info.pid)

    def cut(self, how: str) -> None:
        if how == "frozen":
            os.kill(self.info.pid, signal.SIGSTOP)
            self.frozen = True
        else:
            self.process.terminate()
            self.process.wait(timeout=10)

    def heal(self) -> None:
        if self.frozen:
            os.kill(self.info.pid, signal.SIGCONT)
            self.frozen = False
        elif self.process.poll() is not None:
            self.info = start_server(self.home, port=self.port, detach=False)

    def close(self) -> None:
        if self.frozen:
            os.kill(self.info.pid, signal.SIGCONT)
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.mark.parametrize("how", ["frozen", "stopped"])
def test_cut_off_worker_kills_what_it_cannot_renew_logs_once_and_recovers(
        workers, client, tmp_path, monkeypatch, how) -> None:
    server = OwnServer(tmp_path / "own-server")
    url = server.info.url()
    monkeypatch.setenv("FLOWKIT_REDIS_URL", url)
    get_settings.cache_clear()
    reset_driver()
    try:
        proc = workers.start("default", concurrency=2, redis_url=url, env=ENV, name="cut-off")
        pids = tmp_path / "pids"
        future = long_first_time.submit(str(pids))
        [first] = wait_until(lambda: pids.exists() and pids.read_text().split(), timeout=15,
                             message="the task to start")
        time.sleep(1.0)  # a few renewals went through

        server.cut(how)
        cut_at = time.monotonic()
        wait_until(lambda: not alive(int(first)), timeout=LEASE + 3, interval=0.05,
                   message="the unrenewable attempt to be killed")
        killed_after = time.monotonic() - cut_at
        time.sleep(max(0.0, 10.0 - (time.monotonic() - cut_at)))  # stay cut off for 10 s
        assert proc.poll() is None, workers.output(proc)
        during = workers.output(proc)
        assert len(children(proc.pid)) == 1  # no restart while Redis is away

        server.heal()
        # Recovered: the attempt runs again (handed back, or reaped once its lease expired).
        assert future.result(timeout=30) == "ran again"
        wait_until(lambda: "worker cut-off: contact with Redis is back" in workers.output(proc),
                   timeout=10, message="the supervisor to log the way back")
        # The killed executor was replaced once Redis answered again (not while cut off).
        wait_until(lambda: len(children(proc.pid)) == 2, timeout=10,
                   message="the killed executor to be replaced")
        history = [h["state"] for h in task_runs.get_history(client_for(server.info.url()),
                                                             future.task_run_id)]
    finally:
        reset_driver()
        get_settings.cache_clear()
        server.heal()
        workers.stop_all()
        server.close()

    assert LEASE - 1.0 <= killed_after <= LEASE + 2.0, killed_after
    assert len(pids.read_text().split()) == 2
    assert history[-1] == "completed"
    assert during.count("worker cut-off: lost contact with Redis") == 1, during
    assert "leases not renewed" in during
    warnings = [line for line in during.splitlines() if re.search(r"\bWARNING\b", line)]
    # The supervisor's loss and its kill, one loss per executor, one exit: not 4 a second.
    assert len(warnings) <= 6, "\n".join(warnings)
