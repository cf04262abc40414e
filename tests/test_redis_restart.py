"""A Redis restart (append-only persistence): workers and drivers carry on, nothing is lost."""

from __future__ import annotations

import pytest

from flowkit.driver import reset_driver
from flowkit.embedded import _started, free_port, start_server
from flowkit.settings import get_settings

from conftest import wait_until
from tasks_for_tests import add, identity, sleep_then


def client_for(info):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis.from_url(info.url())


@pytest.mark.slow
def test_worker_and_driver_survive_a_server_restart(workers, client, tmp_path,
                                                    monkeypatch) -> None:
    home = tmp_path / "own-server"
    port = free_port()
    info = start_server(home, port=port, detach=False)
    monkeypatch.setenv("FLOWKIT_REDIS_URL", info.url())
    get_settings.cache_clear()
    reset_driver()
    try:
        proc = workers.start("default", concurrency=1, redis_url=info.url())
        assert add.submit(1, 2).result(timeout=15) == 3

        # Restart while a task runs: its outcome is recorded after the restart, when the
        # server has lost every connection (the library comes back with the AOF).
        running = sleep_then.submit(1.5, "survived")
        wait_until(lambda: client_for(info).hget(f"flowkit:taskrun:{running.task_run_id}",
                                                 "state") == b"running", message="running")
        server = next(p for p in _started if p.pid == info.pid)
        server.terminate()
        server.wait(timeout=10)
        info = start_server(home, port=port, detach=False)  # reloads the AOF

        assert running.result(timeout=30) == "survived"
        # Work queued while the server is restarted is not lost either.
        queued = identity.with_options(queue="parked").map(range(30))
        server = next(p for p in _started if p.pid == info.pid)
        server.terminate()
        server.wait(timeout=10)
        info = start_server(home, port=port, detach=False)
        workers.start("parked", concurrency=1, redis_url=info.url())
        assert [f.result(timeout=30) for f in queued] == list(range(30))
        futures = identity.map(range(20))
        assert [f.result(timeout=30) for f in futures] == list(range(20))
        assert proc.poll() is None, workers.output(proc)
        assert "Function not found" not in workers.output(proc)
    finally:
        reset_driver()
        for p in _started:
            if p.pid == info.pid:
                p.terminate()
                p.wait(timeout=10)
        get_settings.cache_clear()


def test_a_server_that_lost_the_library_gets_it_again(worker, client) -> None:
    """A Redis restarted empty (no persistence) has no functions: the first call that finds
    none loads the library and runs again, in the driver and in the worker alike."""
    assert add.submit(1, 2).result(timeout=15) == 3
    client.function_flush()
    assert client.function_list() == []
    assert [f.result(timeout=15) for f in identity.map(range(5))] == list(range(5))
    names = [dict(zip(lib[::2], lib[1::2]))[b"library_name"] for lib in client.function_list()]
    assert [n for n in names if n.startswith(b"flowkit_")], names
