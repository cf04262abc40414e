"""Servers of a test's own (to kill, restart empty, fill or promote) and a TCP proxy in front.

The session's server (conftest.py) is shared by every test; these are started by one test
and stopped by it, on free loopback ports, with no persistence unless the test asks.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis

from flowkit.driver import reset_driver
from flowkit.embedded import find_server_binary, free_port
from flowkit.settings import get_settings


class PrivateServer:
    """One Redis-compatible server process; ``start`` again after ``kill`` restarts it empty
    on the same port."""

    def __init__(self, folder: Path, *args: str) -> None:
        self.folder, self.args, self.port = folder, args, free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=10)

    def start(self) -> PrivateServer:
        cmd = [find_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", str(self.folder), *self.args]
        with open(self.folder / "server.log", "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            assert self.proc.poll() is None, (self.folder / "server.log").read_text()
            assert time.monotonic() < deadline, "the private server did not answer PING"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Proxy:
    """Forwards a loopback port to a server's; ``switch`` points it at another server and
    cuts the open connections, as a failover behind a virtual IP does."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def switch(self, target_port: int) -> None:
        with self.lock:
            self.target = target_port
            cut, self.open = self.open, []
        for sock in cut:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.listener.close()
        self.switch(self.target)

    def _accept(self) -> None:
        while True:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                except OSError:  # the server is down: so is this connection
                    downstream.close()
                    continue
                upstream.settimeout(None)
                self.open += [downstream, upstream]
            for a, b in ((downstream, upstream), (upstream, downstream)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def use_server(monkeypatch: pytest.MonkeyPatch, url: str, **env: str) -> None:
    """Point this process's driver at ``url`` (and the FLOWKIT_* ``env``), from scratch."""
    monkeypatch.setenv("FLOWKIT_REDIS_URL", url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    reset_driver()
