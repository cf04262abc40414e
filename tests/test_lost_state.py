"""Redis lost what a driver waits on: restarted empty, or a replica promoted too early.

Each test runs servers of its own (tests/private_servers.py); the waiting driver must get
``RunLost`` naming the cause within seconds instead of waiting forever.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit.driver import reset_driver
from flowkit.errors import RunLost
from flowkit.settings import get_settings
from flowkit.states import RunState
from flowkit.store import keys
from private_servers import PrivateServer, Proxy, use_server

from conftest import WorkerProcesses, wait_until
from tasks_for_tests import add, identity, sleep_then

pytestmark = pytest.mark.slow


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[PrivateServer]]:
    """Private servers the test appends to; killed (and the driver reset) afterwards."""
    made: list[PrivateServer] = []
    yield made
    reset_driver()
    for srv in made:
        srv.kill()
    get_settings.cache_clear()


def test_a_server_restarted_empty_fails_the_waiting_future_with_run_lost(
        servers: list[PrivateServer], workers: WorkerProcesses, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    srv = PrivateServer(tmp_path / "srv").start()
    servers.append(srv)
    use_server(monkeypatch, srv.url)
    proc = workers.start("default", concurrency=2, redis_url=srv.url)
    assert add.submit(1, 2).result(timeout=15) == 3
    running = sleep_then.submit(10, "never seen")
    wait_until(lambda: srv.client().hget(keys.task_run(running.task_run_id), "state")
               == b"running", message="the task running")

    srv.kill()
    srv.start()  # same port, no persistence: empty
    restarted = time.monotonic()
    with pytest.raises(RunLost, match="restarted empty or was flushed") as lost:
        running.result(timeout=20)
    assert time.monotonic() - restarted < 5
    assert running.task_run_id in str(lost.value)
    assert running.state is RunState.CRASHED

    # The worker says so once (not once per check), and work goes on on the new server.
    line = "lost flowkit's state"
    wait_until(lambda: line in workers.output(proc), timeout=10, message="the worker's notice")
    assert add.submit(2, 3).result(timeout=15) == 5
    time.sleep(2.5)  # more than one period of the worker's duty
    assert workers.output(proc).count(line) == 1, workers.output(proc)
    assert proc.poll() is None


def test_a_restart_that_keeps_the_data_is_not_a_loss(
        servers: list[PrivateServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run id changes on every restart; with the marker and the run still there, the
    future keeps waiting (here on a queue nobody serves)."""
    srv = PrivateServer(tmp_path / "srv", "--appendonly", "yes").start()
    servers.append(srv)
    use_server(monkeypatch, srv.url)
    parked = identity.with_options(queue="nobody").submit(1)
    run_id = srv.client().info("server")["run_id"]
    srv.client().shutdown(save=True)  # flushes the AOF
    srv.proc.wait(timeout=10)  # type: ignore[union-attr]
    srv.start()
    assert srv.client().info("server")["run_id"] != run_id
    parked.wait(timeout=4)
    assert not parked.done()
    assert srv.client().exists(keys.task_run(parked.task_run_id)) == 1


def test_a_promoted_replica_without_the_latest_writes_fails_the_future_with_run_lost(
        servers: list[PrivateServer], client: object, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    primary = PrivateServer(tmp_path / "primary").start()
    replica = PrivateServer(tmp_path / "replica", "--replicaof", "127.0.0.1",
                            str(primary.port)).start()
    servers += [primary, replica]
    proxy = Proxy(primary.port)
    try:
        use_server(monkeypatch, proxy.url)
        nobody = identity.with_options(queue="nobody")
        replicated = nobody.submit(1)
        wait_until(lambda: replica.client().exists(keys.task_run(replicated.task_run_id)),
                   message="the first task run on the replica")
        # The replica stops following before the next submit reaches it, then takes over.
        replica.client().execute_command("REPLICAOF", "NO", "ONE")
        unseen = nobody.submit(2)
        assert primary.client().exists(keys.task_run(unseen.task_run_id)) == 1
        assert replica.client().exists(keys.task_run(unseen.task_run_id)) == 0
        proxy.switch(replica.port)
        switched = time.monotonic()
        with pytest.raises(RunLost, match="not the server it was") as lost:
            unseen.result(timeout=20)
        assert time.monotonic() - switched < 5
        assert "replica was promoted" in str(lost.value)
        assert unseen.task_run_id in str(lost.value)
        # The run the replica has is not lost: its future still waits.
        replicated.wait(timeout=2)
        assert not replicated.done()
    finally:
        reset_driver()
        proxy.close()


def test_after_a_flush_only_the_runs_from_before_are_lost(
        servers: list[PrivateServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = PrivateServer(tmp_path / "srv").start()
    servers.append(srv)
    use_server(monkeypatch, srv.url)
    nobody = identity.with_options(queue="nobody")
    before = nobody.submit(1)
    srv.client().flushdb()
    after = nobody.submit(2)  # before the driver noticed: its run is there, so not lost
    with pytest.raises(RunLost, match="flushed"):
        before.result(timeout=10)
    after.wait(timeout=2)
    assert not after.done()
    assert srv.client().exists(keys.task_run(after.task_run_id)) == 1
    assert srv.client().get(keys.EPOCH)  # a new marker, for the next loss
