"""``flowkit worker start``: a supervisor with N warm executor processes.

The supervisor registers the worker, renews its heartbeat (executors never do: a task that
hogs the CPU cannot make its worker look dead), restarts executors that die, and on SIGTERM
stops taking work, lets running attempts finish and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from flowkit._version import __version__
from flowkit.settings import get_settings
from flowkit.store import keys, lua, queue as queue_store
from flowkit.store.connection import call, connect, redact
from flowkit.store.runs import get_task_run, new_id

logger = logging.getLogger(__name__)


@dataclass
class _Slot:
    index: int
    executor_id: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0


class WorkerSupervisor:
    """Supervises the executor processes of one worker."""

    def __init__(self, url: str, queues: list[str], concurrency: int, *, burst: bool = False,
                 parent_pid: int | None = None, name: str | None = None) -> None:
        self.settings = get_settings()
        self.url, self.queues, self.concurrency = url, queues, concurrency
        self.burst, self.parent_pid = burst, parent_pid
        self.worker_id = name or f"{socket.gethostname()}-{os.getpid()}-{new_id()[:6]}"
        self.client = connect(url, connect_timeout=self.settings.connect_timeout,
                              socket_timeout=self.settings.socket_timeout)
        self.slots = [_Slot(i, f"{self.worker_id}.{i}") for i in range(concurrency)]
        self.stopping = False

    def request_stop(self, signum: int, frame: Any) -> None:
        """First signal: drain. Executors get the same request."""
        if not self.stopping:
            logger.info("worker %s: stop requested (signal %s); finishing running tasks",
                        self.worker_id, signum)
        self.stopping = True
        for slot in self.slots:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.send_signal(signal.SIGTERM)

    def _spawn(self, slot: _Slot) -> None:
        cmd = [sys.executable, "-m", "flowkit.workers.executor", "--redis-url", self.url,
               "--worker-id", self.worker_id, "--executor-id", slot.executor_id]
        for name in self.queues:
            cmd += ["--queue", name]
        if self.burst:
            cmd.append("--burst")
        slot.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def run(self) -> int:
        """Serve until stopped; the exit code is 0 after a clean drain."""
        queue_store.register_worker(self.client, self.worker_id, self.queues, self.concurrency,
                                    __version__)
        logger.info("worker %s serving %s with %d executors on %s", self.worker_id,
                    ", ".join(self.queues), self.concurrency, redact(self.url))
        for slot in self.slots:
            self._spawn(slot)
        try:
            return self._supervise()
        finally:
            try:
                queue_store.unregister_worker(self.client, self.worker_id, self.queues)
            except Exception as exc:
                logger.warning("could not unregister worker %s: %s", self.worker_id, exc)

    def _supervise(self) -> int:
        next_beat = 0.0
        while True:
            alive = [s for s in self.slots if s.process is not None and s.process.poll() is None]
            for slot in self.slots:
                if slot.process is not None and slot.process.poll() is not None:
                    self._on_exit(slot)
            if not alive and all(s.process is None for s in self.slots):
                logger.info("worker %s: all executors exited", self.worker_id)
                return 0
            if self.parent_pid and not self.stopping and not _pid_alive(self.parent_pid):
                logger.info("worker %s: parent %d is gone; stopping", self.worker_id,
                            self.parent_pid)
                self.request_stop(0, None)
            if time.monotonic() >= next_beat:
                self._heartbeat()
                next_beat = time.monotonic() + self.settings.heartbeat_seconds
            time.sleep(0.05)

    def _on_exit(self, slot: _Slot) -> None:
        assert slot.process is not None
        code = slot.process.returncode
        slot.process = None
        if code != 0:
            self._recover(slot, code)
        if self.stopping or (self.burst and code == 0):
            return
        slot.restarts += 1
        logger.warning("executor %s exited with %s; restarting (restart #%d)",
                       slot.executor_id, code, slot.restarts)
        self._spawn(slot)

    def _recover(self, slot: _Slot, code: int) -> None:
        """After an executor died: its running task run crashed, its unstarted claims go back."""
        try:
            ids = [i.decode() for i in call(self.client, self.client.lrange,
                                             keys.processing(slot.executor_id), 0, -1)]
            if not ids:
                return
            running, unstarted = ids[0], ids[1:]
            if unstarted:
                queue_store.release(self.client, self.worker_id, slot.executor_id, unstarted)
            record = get_task_run(self.client, running)
            if record is None or record.get("state") != "running":
                self.client.lrem(keys.processing(slot.executor_id), 0, running)
                return
            attempt, retries = int(record.get("attempt", 1)), int(record.get("retries", 0))
            outcome = queue_store.Outcome(
                "crashed", error_type="flowkit.errors.WorkerCrashed",
                error_message=f"the executor process running this task exited with "
                              f"{_describe_exit(code)} on worker {self.worker_id}",
                retry_delay=0.0 if attempt <= retries else None)
            claimed = queue_store.Claim(running, b"", b"", attempt, record.get("flow_run_id", ""),
                                        record.get("reply_to", ""))
            lua.execute(self.client, lambda pipe: queue_store.finish(
                self.client, pipe, self.worker_id, slot.executor_id, claimed,
                record.get("queue", self.queues[0]), outcome,
                self.settings.result_ttl_seconds * 1000))
            logger.warning("task run %s crashed its executor (%s)", running,
                           _describe_exit(code))
        except Exception as exc:
            logger.error("could not recover the work of executor %s: %s", slot.executor_id, exc)

    def _heartbeat(self) -> None:
        try:
            pipe = self.client.pipeline(transaction=False)
            for slot in self.slots:
                pipe.llen(keys.processing(slot.executor_id))
            busy = sum(int(n) for n in pipe.execute())
            queue_store.heartbeat(self.client, self.worker_id, self.queues, busy)
        except Exception as exc:
            logger.warning("heartbeat failed: %s", exc)


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
