"""A TCP proxy that delivers every chunk a fixed delay after it arrived, in both directions.

The kernel here has no netem, so the benchmark puts this between clients and Redis to show the
latency users feel on a real network (1 ms each way = 2 ms round trip). Each direction of each
connection keeps a queue of (due time, bytes) stamped on arrival and one timer for the head of
it, which writes every chunk whose time has come, in order: traffic is delayed, not serialized
behind one sleep, so a pipeline of many chunks still costs one delay, as on a wire. asyncio
protocols and timers rather than streams and a task per chunk: the proxy shares the machine's
two cores with what it measures, so it must cost little. Runs in a process of its own (no GIL
shared with the benchmark's driver):

    python latency_proxy.py TARGET_HOST TARGET_PORT DELAY_MS

prints ``listening PORT`` on stdout once it accepts connections, and runs until killed.
"""

from __future__ import annotations

import asyncio
import collections
import selectors
import subprocess
import sys
from pathlib import Path

#: A timer may fire this early (seconds); a chunk this close to due counts as due.
SLACK = 1e-6


class _End(asyncio.Protocol):
    """One end of a proxied connection: writes to its own transport what the other end
    received, each chunk ``delay`` after its arrival; b"" (the other end closed) closes it."""

    def __init__(self, delay: float) -> None:
        self.loop = asyncio.get_running_loop()
        self.delay = delay
        self.transport: asyncio.Transport | None = None
        self.other: _End | None = None
        self.pending: collections.deque[tuple[float, bytes]] = collections.deque()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._arm()  # the client may have sent before the upstream connection was made

    def data_received(self, data: bytes) -> None:
        if self.other is not None:
            self.other.later(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.other is not None:
            self.other.later(b"")

    def later(self, data: bytes) -> None:
        """Deliver ``data`` to this end's transport ``delay`` from now."""
        self.pending.append((self.loop.time() + self.delay, data))
        self._arm()

    def _arm(self) -> None:
        if self.timer is None and self.pending and self.transport is not None:
            self.timer = self.loop.call_at(self.pending[0][0], self._flush)

    def _flush(self) -> None:
        self.timer = None
        now = self.loop.time() + SLACK
        while self.pending and self.pending[0][0] <= now and self.transport is not None:
            _, data = self.pending.popleft()
            if not data:
                self.pending.clear()
                self.transport.close()
                return
            self.transport.write(data)
        self._arm()


async def _serve(target_host: str, target_port: int, delay: float) -> None:
    loop = asyncio.get_running_loop()

    def accept() -> _End:
        client = _End(delay)
        upstream = _End(delay)
        client.other, upstream.other = upstream, client

        async def connect() -> None:
            try:
                await loop.create_connection(lambda: upstream, target_host, target_port)
            except OSError:
                if client.transport is not None:
                    client.transport.close()

        connecting.add(task := loop.create_task(connect()))
        task.add_done_callback(connecting.discard)
        return client

    connecting: set[asyncio.Task[None]] = set()
    server = await loop.create_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(f"listening {port}", flush=True)
    async with server:
        await server.serve_forever()


def start(target_host: str, target_port: int, delay_ms: float,
          log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the proxy in a process of its own; return it and the port it listens on."""
    with open(log, "ab") as err:
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), target_host,
                                 str(target_port), str(delay_ms)], stdout=subprocess.PIPE,
                                stderr=err, stdin=subprocess.DEVNULL, start_new_session=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    if not line.startswith("listening "):
        proc.kill()
        raise RuntimeError(f"the latency proxy did not start (said {line!r}; log {log})")
    return proc, int(line.split()[1])


def main(argv: list[str]) -> None:
    """Entry point: ``TARGET_HOST TARGET_PORT DELAY_MS``."""
    host, port, delay_ms = argv[0], int(argv[1]), float(argv[2])
    # select() takes microsecond timeouts; epoll and poll round them up to whole milliseconds,
    # which would add up to 1 ms more to every delivery. A few dozen sockets: select is fine.
    loop = asyncio.SelectorEventLoop(selectors.SelectSelector())
    loop.run_until_complete(_serve(host, port, delay_ms / 1000))


if __name__ == "__main__":
    main(sys.argv[1:])
