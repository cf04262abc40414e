"""An evicting Redis is refused (or used with a warning), and a full one says so at submit.

Each test runs a private server started with ``--maxmemory`` (tests/private_servers.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from flowkit.driver import reset_driver
from flowkit.errors import ConfigurationError, StoreFullError
from flowkit.settings import get_settings
from private_servers import PrivateServer, use_server

from conftest import TESTS_DIR
from tasks_for_tests import add, identity

pytestmark = pytest.mark.slow


@pytest.fixture
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[PrivateServer]:
    srv = PrivateServer(tmp_path / "srv", *request.param).start()
    yield srv
    reset_driver()
    srv.kill()
    get_settings.cache_clear()


def _worker(url: str, *args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """A burst worker: it exits at once when refused, or when its queue is empty."""
    cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", "1", "--burst",
           "--redis-url", url, *args]
    return subprocess.run(cmd, cwd=TESTS_DIR, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})})


@pytest.mark.parametrize("server", [("--maxmemory", "64mb", "--maxmemory-policy",
                                     "allkeys-lru")], indirect=True)
def test_an_evicting_policy_is_refused_by_drivers_and_workers(
        server: PrivateServer, monkeypatch: pytest.MonkeyPatch) -> None:
    use_server(monkeypatch, server.url)
    with pytest.raises(ConfigurationError, match="maxmemory-policy allkeys-lru") as refused:
        add.submit(1, 2)
    assert "CONFIG SET maxmemory-policy noeviction" in str(refused.value)
    assert "\n" not in str(refused.value)
    assert server.client().keys("flowkit:*") == []  # refused before writing anything

    # volatile-* too: every flowkit key carries a TTL.
    server.client().config_set("maxmemory-policy", "volatile-lru")
    done = _worker(server.url)
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "maxmemory-policy volatile-lru" in errors[0], done.stderr

    # The override: the driver (FLOWKIT_ALLOW_EVICTION) and the worker (--allow-eviction)
    # go on, and warn.
    use_server(monkeypatch, server.url, FLOWKIT_ALLOW_EVICTION="1")
    future = add.submit(1, 2)
    done = _worker(server.url, "--allow-eviction")
    assert done.returncode == 0, done.stderr
    assert "volatile-lru" in done.stderr and "eviction was allowed" in done.stderr
    assert future.result(timeout=15) == 3


@pytest.mark.parametrize("server", [("--maxmemory", "64mb", "--maxmemory-policy",
                                     "allkeys-lru", "--maxmemory", "0")], indirect=True)
def test_no_maxmemory_means_no_eviction_whatever_the_policy(
        server: PrivateServer, monkeypatch: pytest.MonkeyPatch) -> None:
    use_server(monkeypatch, server.url)
    future = add.submit(2, 2)
    assert _worker(server.url).returncode == 0
    assert future.result(timeout=15) == 4


@pytest.mark.parametrize("server", [("--maxmemory", "20mb")], indirect=True)
def test_a_full_noeviction_server_refuses_a_submit_with_store_full_error(
        server: PrivateServer, monkeypatch: pytest.MonkeyPatch) -> None:
    use_server(monkeypatch, server.url)
    first = identity.submit(0)  # driver, ad-hoc flow run and function blob in place
    fill = server.client()
    for i in range(20):
        fill.set(f"filler:{i}", b"x" * 100_000)
    # Past maxmemory: the server refuses every write (noeviction) until memory is freed.
    used = fill.info("memory")["used_memory"]
    fill.config_set("maxmemory", used - 1_000_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        fill.set("one-more", b"x")
    runs = set(fill.keys("flowkit:taskrun:*"))
    queued = fill.llen("rq:queue:default")

    with pytest.raises(StoreFullError, match=r"Redis at redis://127\.0\.0\.1:\d+/0 is full "
                                             r"\(used [\d.]+ MiB of maxmemory [\d.]+ MiB\)"):
        identity.map(range(10))
    with pytest.raises(StoreFullError, match="is full"):
        add.submit(1, 2)  # a new function: its blob is refused first
    # Nothing of the refused call was written.
    assert set(fill.keys("flowkit:taskrun:*")) == runs
    assert fill.llen("rq:queue:default") == queued == 1

    fill.config_set("maxmemory", "20mb")
    later = identity.map(range(3))
    assert fill.llen("rq:queue:default") == 4
    done = _worker(server.url)
    assert done.returncode == 0, done.stderr
    assert [f.result(timeout=15) for f in [first, *later]] == [0, 0, 1, 2]



@pytest.mark.parametrize("server", [("--maxmemory", "20mb")], indirect=True)
def test_a_full_server_can_still_be_pruned(server: PrivateServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting is how a full Redis gets its memory back: prune runs where writes are
    refused (its library function allows it), as the full-server error's hint promises."""
    import time

    from flowkit.store import flow_runs, retention
    from flowkit.store.limits import Limits

    use_server(monkeypatch, server.url)
    futures = identity.map(range(20))
    done = _worker(server.url)
    assert done.returncode == 0, done.stderr
    assert [f.result(timeout=15) for f in futures] == list(range(20))
    fill = server.client()
    run_id = flow_runs.list_flow_runs(fill, limit=1)[0]["id"]
    reset_driver()  # the driver leaves: its ad-hoc run is closed
    used = fill.info("memory")["used_memory"]
    fill.config_set("maxmemory", used - 100_000)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        fill.set("one-more", b"x")
    pruned = retention.prune_all(fill, Limits.from_settings(get_settings()), time.time() + 60)
    assert pruned.flow_runs >= 1 and pruned.task_runs == 20
    assert flow_runs.get_flow_run(fill, run_id) is None
    assert fill.keys("flowkit:taskrun:*") == []
