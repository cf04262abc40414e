"""Worker and server processes of the benchmark: started in sessions of their own, stopped
warm, every wait bounded."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def wait_until(predicate: Callable[[], Any], timeout: float, what: str,
               interval: float = 0.02) -> Any:
    """Poll ``predicate`` until truthy; TimeoutError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


def spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, cwd=BENCH_DIR, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop_procs(procs: list[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM (warm shutdown), then SIGKILL the process group of any that lingers."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


def stop_server(pid: int) -> None:
    """Stop the benchmark's own server (SIGTERM) and reap it, within 10 s."""
    os.kill(pid, signal.SIGTERM)
    try:
        wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0] != 0, 10, "server exit")
    except (ChildProcessError, TimeoutError):
        pass


def describe(exc: BaseException) -> str:
    """An error for the report: redis-py's repr ("network:TimeoutError") drops the message."""
    return f"{type(exc).__name__}: {exc}"
