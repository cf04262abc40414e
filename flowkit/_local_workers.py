"""Local workers of the embedded default: started by a driver when no worker serves a queue.

Each is a real ``flowkit worker start`` process in its own session, told the driver's pid so
it stops when the driver is gone, logging under ``FLOWKIT_HOME/logs``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

#: Seconds a stopping local worker gets to drain before it is killed.
STOP_TIMEOUT_SECONDS = 10.0


class LocalWorkers:
    """The worker processes one driver started, by queue."""

    def __init__(self, url: str, home: Path, executors: int) -> None:
        self.url, self.home, self.executors = url, home, executors
        self._procs: dict[str, subprocess.Popen[bytes]] = {}

    def serving(self, queue: str) -> bool:
        """True while a worker this driver started for ``queue`` is alive."""
        proc = self._procs.get(queue)
        return proc is not None and proc.poll() is None

    def start(self, queue: str) -> None:
        """Start a worker for ``queue`` (its output goes to a log file per queue and pid)."""
        log_dir = self.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "flowkit", "worker", "start", "--queue", queue,
               "--concurrency", str(self.executors), "--redis-url", self.url,
               "--parent-pid", str(os.getpid())]
        with open(log_dir / f"worker-{queue}-{os.getpid()}.log", "ab") as log:
            self._procs[queue] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=log, start_new_session=True)

    def stop(self) -> None:
        """SIGTERM every worker (they drain), then kill those still running after a while."""
        procs = list(self._procs.values())
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
