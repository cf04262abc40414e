"""A map's later chunks go out back to back on one connection (EnqueueStream), each reply
read one chunk behind: order, a lost library, a refused chunk and an abandoned stream."""

from __future__ import annotations

import os
import signal

import pytest

from flowkit.errors import StoreError
from flowkit.store import functions, keys, task_runs
from flowkit.store.enqueue_stream import EnqueueStream
from flowkit.store.task_runs import TaskRunSpec

from conftest import wait_until
from library_fixtures import QUEUE, REPLY, seed_flow_run


def _chunk(prefix: str, n: int, flow_run_id: str = "f1") -> list[TaskRunSpec]:
    return [TaskRunSpec(id=f"{prefix}{i:02d}", flow_run_id=flow_run_id, task_name="t",
                        queue=QUEUE, envelope=b"head", body=b"body", reply_to=REPLY)
            for i in range(n)]


def _index(client) -> list[str]:
    return [i.decode() for i in client.lrange(keys.flow_run_tasks("f1"), 0, -1)]


def test_chunks_sent_before_their_replies_are_read_land_in_order(client, limits) -> None:
    seed_flow_run(client, "f1")
    stream = EnqueueStream(client)
    chunks = [_chunk(p, 5) for p in "abc"]
    readers = [task_runs.send_enqueue(client, limits, c, None, None, stream) for c in chunks]
    for read in readers:
        read()
    stream.close()
    assert _index(client) == [s.id for c in chunks for s in c]
    assert client.llen(keys.queue(QUEUE)) == 15


def test_a_library_lost_midway_is_loaded_again_and_both_chunks_run_in_order(
        client, limits) -> None:
    seed_flow_run(client, "f1")
    task_runs.enqueue_task_runs(client, limits, _chunk("z", 1))  # library loaded
    client.function_flush()  # the server "restarted empty" of its functions
    stream = EnqueueStream(client)
    first = task_runs.send_enqueue(client, limits, _chunk("a", 3), None, None, stream)
    second = task_runs.send_enqueue(client, limits, _chunk("b", 3), None, None, stream)
    first()
    second()
    stream.close()
    assert _index(client) == ["z00", "a00", "a01", "a02", "b00", "b01", "b02"]


def test_a_refused_chunk_raises_from_its_reader_and_the_next_one_still_lands(
        client, limits) -> None:
    seed_flow_run(client, "f1")
    stream = EnqueueStream(client)
    gone = task_runs.send_enqueue(client, limits, _chunk("g", 2, "lost"), None, None, stream)
    fine = task_runs.send_enqueue(client, limits, _chunk("a", 2), None, None, stream)
    with pytest.raises(StoreError, match="no longer exists"):
        gone()
    fine()
    stream.close()
    assert _index(client) == ["a00", "a01"]
    assert client.ping()


def test_a_stream_closed_with_replies_unread_hands_back_no_stale_reply(client, limits) -> None:
    seed_flow_run(client, "f1")
    stream = EnqueueStream(client)
    task_runs.send_enqueue(client, limits, _chunk("a", 2), None, None, stream)
    stream.close()  # the reply was never read: the connection must not be reused as is
    for _ in range(3):  # whichever pooled connection answers, it answers its own command
        assert client.get("nothing-here") is None
        assert client.echo("mine") == b"mine"


def test_a_health_check_due_between_chunks_does_not_read_a_chunks_reply(client, limits) -> None:
    seed_flow_run(client, "f1")
    stream = EnqueueStream(client)
    first = task_runs.send_enqueue(client, limits, _chunk("a", 2), None, None, stream)
    # The driver's client checks every 30 s; as if that had passed since the last read:
    stream._conn.health_check_interval, stream._conn.next_health_check = 30, 0
    second = task_runs.send_enqueue(client, limits, _chunk("b", 2), None, None, stream)
    first()
    second()
    stream.close()
    assert _index(client) == ["a00", "a01", "b00", "b01"]


def _stream_connection_id(client, stream: EnqueueStream) -> int:
    """The server's id of the stream's connection (opened here if need be), asked while it
    has no reply unread."""
    if stream._conn is None:
        stream._conn = client.connection_pool.get_connection()
    stream._conn.send_command("CLIENT", "ID")
    return int(stream._conn.read_response())


def _kill(client, connection_id: int) -> None:
    """Cut a connection from the server side (CLIENT KILL), as a proxy, a server `timeout`
    or a network blip does."""
    assert client.client_kill_filter(_id=connection_id) == 1


def test_chunks_in_flight_when_the_connection_drops_land_once_each(client, limits) -> None:
    seed_flow_run(client, "f1")
    stream = EnqueueStream(client)
    first = task_runs.send_enqueue(client, limits, _chunk("a", 3), None, None, stream)
    first()  # the stream's connection is open and idle
    _kill(client, _stream_connection_id(client, stream))
    # Sent on the dead connection (the write may even succeed into the closed socket): the
    # reader finds the connection gone, sends both chunks again on a new one, in order.
    second = task_runs.send_enqueue(client, limits, _chunk("b", 3), None, None, stream)
    third = task_runs.send_enqueue(client, limits, _chunk("c", 3), None, None, stream)
    second()
    third()
    stream.close()
    assert _index(client) == [f"{p}0{i}" for p in "abc" for i in range(3)]
    assert client.llen(keys.queue(QUEUE)) == 9
    assert client.hget(keys.flow_run("f1"), "n_total") == b"9"


def test_a_chunk_that_ran_before_its_reply_was_lost_is_not_written_twice(client,
                                                                         limits) -> None:
    seed_flow_run(client, "f1")
    functions.load(client)  # the chunk must run when sent (not wait for a library reload)
    stream = EnqueueStream(client)
    chunk = _chunk("a", 4)
    read = task_runs.send_enqueue(client, limits, chunk, None, None, stream)
    # Let the server run it, then lose the reply with the connection (closed on this side:
    # the reply, already in the socket's buffer, goes with it): the stream cannot tell that
    # it ran and sends it again.
    wait_until(lambda: client.llen(keys.flow_run_tasks("f1")) == 4, timeout=10,
                  message="the chunk ran on the server")
    stream._conn.disconnect()
    read()
    stream.close()
    assert _index(client) == [s.id for s in chunk]  # once, not twice
    assert client.llen(keys.queue(QUEUE)) == 4
    assert client.hget(keys.flow_run("f1"), "n_total") == b"4"


@pytest.mark.slow
def test_a_server_that_takes_writes_but_never_answers_fails_the_read_within_a_bound(
        tmp_path, limits) -> None:
    """SIGSTOP: the kernel still takes the writes, nothing answers. The read times out, the
    stream reconnects (the handshake times out too) for its bounded resends, then the map's
    reader raises the store's error: no hang, and the chunk landed once or not at all."""
    from flowkit.embedded import free_port, start_server
    from flowkit.errors import StoreConnectionError
    from flowkit.store.connection import connect

    info = start_server(tmp_path, port=free_port(), detach=False, record=False)
    try:
        client = connect(info.url(), connect_timeout=0.5, socket_timeout=0.5)
        seed_flow_run(client, "f1")
        functions.load(client)
        stream = EnqueueStream(client)
        task_runs.send_enqueue(client, limits, _chunk("a", 2), None, None, stream)()  # warm
        os.kill(info.pid, signal.SIGSTOP)
        try:
            read = task_runs.send_enqueue(client, limits, _chunk("b", 2), None, None, stream)
            with pytest.raises(StoreConnectionError, match="cannot reach Redis"):
                read()
        finally:
            os.kill(info.pid, signal.SIGCONT)
        stream.close()
        # Nothing half-known: the chunk either landed once or not at all.
        assert _index(client) in (["a00", "a01"], ["a00", "a01", "b00", "b01"])
    finally:
        os.kill(info.pid, signal.SIGTERM)
        os.waitpid(info.pid, 0)
