"""A TCP proxy that delivers every chunk a fixed delay after it arrived, in both directions.

The kernel here has no netem, so the benchmark puts this between clients and Redis to show the
latency users feel on a real network (1 ms each way = 2 ms round trip). Each direction of each
connection has a reader that stamps chunks on arrival and a writer that delivers them in order
at arrival + delay: traffic is delayed, not serialized behind one sleep, so a pipeline of many
chunks still costs one delay, as on a wire. Runs in a process of its own (no GIL shared with the
benchmark's driver):

    python latency_proxy.py TARGET_HOST TARGET_PORT DELAY_MS

prints ``listening PORT`` on stdout once it accepts connections, and runs until killed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

#: Bytes read per chunk (a chunk is whatever one read returned; big values span several).
CHUNK = 1 << 16


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                delay: float) -> None:
    """Forward one direction: stamp each chunk on arrival, deliver it at arrival + delay."""
    loop = asyncio.get_running_loop()
    pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await pending.get()
            if not data:
                break
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()

    delivery = asyncio.create_task(deliver())
    try:
        while data := await reader.read(CHUNK):
            pending.put_nowait((loop.time() + delay, data))
    except ConnectionError:
        pass
    finally:
        pending.put_nowait((loop.time() + delay, b""))
        try:
            await delivery
        except ConnectionError:
            pass
        writer.close()


async def _serve(target_host: str, target_port: int, delay: float) -> None:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(target_host, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pump(client_r, server_w, delay), _pump(server_r, client_w, delay),
                             return_exceptions=True)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
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
    asyncio.run(_serve(host, port, delay_ms / 1000))


if __name__ == "__main__":
    main(sys.argv[1:])
