"""The enqueue calls of one map's chunks, sent back to back on one connection.

With one round trip per chunk the server sat idle, on this map's behalf, while the driver read
a chunk's reply and packed and sent the next (a 512-run chunk is about 350 KB). Here a chunk
goes out while the server still runs the one before it, so the server moves from one to the
next at once. One connection keeps them in order (the server runs a connection's commands in
the order they arrive); replies are read in the order of sending, one chunk behind.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import redis.exceptions

from flowkit.store import functions
from flowkit.store.connection import call as guarded

Command = tuple[Any, ...]
#: What a dropped or cut connection raises in redis-py.
_DROPPED = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class CommandRecorder:
    """Stands in for a pipeline while an enqueue is built: records its commands."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def hset(self, key: str, field: str, value: bytes) -> None:
        self.commands.append(("HSET", key, field, value))

    def fcall(self, function: str, numkeys: int, *args: Any) -> None:
        self.commands.append(("FCALL", function, numkeys, *args))


#: Pauses between attempts to reconnect and send again after a dropped connection (bounded:
#: about 8 s in all, like the client's own retries), then the map fails with the error.
RESEND_DELAYS = (0.1, 0.5, 1.0, 2.0, 4.0)


class EnqueueStream:
    """One connection of the client's pool, held by one thread while a map's chunks go out.

    :meth:`send` writes a chunk's commands and returns the function that reads their replies;
    those functions must be called in the order of sending. A dropped connection loses the
    replies of the chunks in flight, not the chunks: they are sent again, in order, on a new
    connection (each enqueue call is remembered by the library, so one that had run writes
    nothing twice; a big body's HSET is the same write again).
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn: Any = None
        #: Chunks sent whose replies are not read yet, in the order of sending.
        self._sent: deque[list[Command]] = deque()

    def send(self, commands: list[Command]) -> Callable[[], None]:
        """Write ``commands``; the returned function reads their replies and raises what
        ``functions.execute`` would have (loading the library again when it is missing).

        Raises:
            StoreConnectionError: the connection failed, and so did every resend.
        """
        self._sent.append(commands)
        try:
            self._write(commands)
        except _DROPPED:
            self._resend()
        return lambda: self._receive(commands)

    def _write(self, commands: list[Command]) -> None:
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        conn = self._conn
        # redis-py's health check (a PING past its interval) would read the reply of a chunk
        # still in flight as the PING's: only a connection with nothing unread is checked.
        try:
            conn.send_packed_command(conn.pack_commands(commands),
                                     check_health=len(self._sent) == 1)
        except _DROPPED:
            self._drop()
            raise

    def _resend(self) -> None:
        """The connection dropped: send every chunk in flight again, in order, on a new one."""
        error: Exception | None = None
        for delay in RESEND_DELAYS:
            time.sleep(delay)
            try:
                for commands in self._sent:
                    self._write(commands)
                return
            except _DROPPED as exc:
                error = exc
        assert error is not None  # (RESEND_DELAYS is not empty)
        self._raise(error)

    def _receive(self, commands: list[Command]) -> None:
        if not self._sent or self._sent[0] is not commands:
            raise RuntimeError("EnqueueStream: replies read out of the order of sending")
        errors: list[redis.exceptions.ResponseError] = []
        for drops in range(len(RESEND_DELAYS) + 1):
            errors.clear()
            try:
                for _ in commands:
                    try:
                        self._conn.read_response()
                    except redis.exceptions.ResponseError as exc:
                        errors.append(exc)
                break
            except _DROPPED as exc:  # its replies are lost: it goes again, with those behind
                self._drop()
                if drops == len(RESEND_DELAYS):
                    # A server that takes a new connection but never answers the chunk (a
                    # script stuck past the socket timeout) would otherwise be sent it
                    # forever: as many tries as a resend gets. (A stopped server fails the
                    # reconnect itself, within the resend's bound.)
                    self._raise(exc)
                self._resend()
        self._sent.popleft()
        if any(functions.is_missing(e) for e in errors):
            # The server lost the library (it restarted empty): nothing of this chunk was
            # written. Load it and run the chunk again (a later chunk already sent failed
            # the same way and runs again after this one, in order).
            def replay(pipe: Any) -> None:
                for command in commands:
                    pipe.execute_command(*command)

            guarded(self.client, functions.load, self.client)
            functions.execute(self.client, replay)
        elif errors:
            self._raise(errors[0])

    def _raise(self, error: Exception) -> None:
        """Raise a redis-py error as the store boundary does (a flowkit error naming the URL
        and what to do), through the one wrapper every other store call goes through."""
        def fail() -> None:
            raise error

        guarded(self.client, fail)

    def _drop(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.disconnect()
            self.client.connection_pool.release(conn)

    def close(self) -> None:
        """Give the connection back to the pool; with replies still unread (a chunk was
        abandoned) disconnect it first, so no other caller reads them."""
        if self._conn is not None:
            conn, self._conn = self._conn, None
            if self._sent:
                conn.disconnect()
            self.client.connection_pool.release(conn)
        self._sent.clear()
