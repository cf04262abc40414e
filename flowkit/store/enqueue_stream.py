"""The enqueue calls of one map's chunks, sent back to back on one connection.

With one round trip per chunk the server sat idle, on this map's behalf, while the driver read
a chunk's reply and packed and sent the next (a 512-run chunk is about 350 KB). Here a chunk
goes out while the server still runs the one before it, so the server moves from one to the
next at once. One connection keeps them in order (the server runs a connection's commands in
the order they arrive); replies are read in the order of sending, one chunk behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowkit.store import functions
from flowkit.store.connection import call as guarded

if TYPE_CHECKING:
    import redis

Command = tuple[Any, ...]


class CommandRecorder:
    """Stands in for a pipeline while an enqueue is built: records its commands."""

    def __init__(self) -> None:
        self.commands: list[Command] = []

    def hset(self, key: str, field: str, value: bytes) -> None:
        self.commands.append(("HSET", key, field, value))

    def fcall(self, function: str, numkeys: int, *args: Any) -> None:
        self.commands.append(("FCALL", function, numkeys, *args))


class EnqueueStream:
    """One connection of the client's pool, held by one thread while a map's chunks go out.

    :meth:`send` writes a chunk's commands and returns the function that reads their replies;
    those functions must be called in the order of sending.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn: Any = None
        self._unread = 0  #: chunks sent whose replies are not read yet

    def send(self, commands: list[Command]) -> Callable[[], None]:
        """Write ``commands``; the returned function reads their replies and raises what
        ``functions.execute`` would have (loading the library again when it is missing).

        Raises:
            StoreConnectionError: the connection failed while writing.
        """
        if self._conn is None:
            self._conn = self.client.connection_pool.get_connection()
        conn = self._conn
        # redis-py's health check (a PING past its interval) would read the reply of a chunk
        # still in flight as the PING's: only a connection with nothing unread is checked.
        guarded(self.client, self._guard, lambda: conn.send_packed_command(
            conn.pack_commands(commands), check_health=self._unread == 0))
        self._unread += 1
        return lambda: self._receive(conn, commands)

    def _receive(self, conn: Any, commands: list[Command]) -> None:
        import redis as redis_lib

        errors: list[redis_lib.ResponseError] = []

        def read() -> None:
            for _ in commands:
                try:
                    conn.read_response()
                except redis_lib.ResponseError as exc:
                    errors.append(exc)

        self._unread -= 1
        guarded(self.client, self._guard, read)
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
            def fail() -> None:
                raise errors[0]

            guarded(self.client, fail)

    def _guard(self, action: Callable[[], None]) -> None:
        """Run ``action``; a connection error leaves the connection unusable: drop it (the
        next send gets a fresh one)."""
        import redis as redis_lib

        try:
            action()
        except (redis_lib.ConnectionError, redis_lib.TimeoutError):
            self._drop()
            raise

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
            if self._unread:
                conn.disconnect()
            self.client.connection_pool.release(conn)
