"""``flowkit worker start``: a supervisor with N warm executor processes.

The supervisor, not the executors, keeps the worker alive in Redis: its duties (duties.py)
renew the heartbeat and the leases of running attempts, reap the expired leases of dead
workers, queue retries whose delay has passed, kill executors stuck past a hard timeout or
running a cancelled task, and sweep old runs. Its loop restarts executors that die. On SIGTERM
it stops taking work, lets running attempts finish and exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowkit._ids import new_id
from flowkit._version import __version__
from flowkit.store import attempts, server, workers
from flowkit.store.connection import connect, redact
from flowkit.store.limits import Limits
from flowkit.workers import duties
from flowkit.workers.slots import Running, Slot, slot_dir

if TYPE_CHECKING:
    from flowkit.settings import Settings

logger = logging.getLogger(__name__)

#: Seconds between the supervisor's checks of its executors (timeouts, deaths).
TICK_SECONDS = 0.05


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs, read once from the settings by the command that starts it."""

    url: str
    queues: list[str]
    concurrency: int
    limits: Limits
    lease_seconds: float
    heartbeat_seconds: float
    hard_timeout_grace_seconds: float
    run_retention_days: float
    connect_timeout: float
    socket_timeout: float
    burst: bool = False
    parent_pid: int | None = None
    name: str | None = None
    allow_eviction: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, url: str, queues: list[str], concurrency: int,
                      **options: Any) -> WorkerConfig:
        """The configuration of a worker on ``url`` serving ``queues``."""
        return cls(url=url, queues=queues, concurrency=concurrency,
                   limits=Limits.from_settings(settings), lease_seconds=settings.lease_seconds,
                   heartbeat_seconds=settings.heartbeat_seconds,
                   hard_timeout_grace_seconds=settings.hard_timeout_grace_seconds,
                   run_retention_days=settings.run_retention_days,
                   connect_timeout=settings.connect_timeout,
                   socket_timeout=settings.socket_timeout, **options)


@dataclass
class _Executor:
    index: int
    executor_id: str
    slot: Slot
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    #: Set when the supervisor killed the process on purpose (outcome already recorded).
    killed_for: str = ""
    started: float = field(default_factory=time.monotonic)


class WorkerSupervisor:
    """Supervises the executor processes of one worker."""

    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.url, self.queues, self.limits = config.url, config.queues, config.limits
        self.worker_id = (config.name
                          or f"{socket.gethostname()}-{os.getpid()}-{new_id()[:6]}")
        self.client = connect(config.url, connect_timeout=config.connect_timeout,
                              socket_timeout=config.socket_timeout)
        server.check_eviction(self.client, allow=config.allow_eviction, who="worker")
        self.executors = [
            _Executor(i, f"{self.worker_id}.{i}",
                      Slot(slot_dir() / f"flowkit-{self.worker_id}.{i}.slot", create=True))
            for i in range(config.concurrency)]
        self.stopping = False
        self.duties = duties.DutyRunner([
            duties.HardTimeouts(self, config.hard_timeout_grace_seconds),
            duties.LeaseRenewal(self, config.heartbeat_seconds, config.lease_seconds),
            duties.RetryPromotion(self), duties.CancelWatch(self), duties.Reaper(self),
            duties.RetentionSweep(self, config.run_retention_days),
            duties.LostStateNotice(self)], self.worker_id)

    # -- what duties see (duties.Host) ------------------------------------------------------
    def executor_ids(self) -> list[str]:
        return [ex.executor_id for ex in self.executors]

    def running(self) -> dict[str, Running]:
        return {r.task_run_id: r for ex in self.executors
                if ex.process is not None and not ex.killed_for and (r := ex.slot.read())}

    def kill(self, task_run_id: str, outcome: str, message: str,
             retry_delay: float | None = None) -> None:
        for ex in self.executors:
            running = ex.slot.read()
            if ex.process is not None and running and running.task_run_id == task_run_id:
                ex.killed_for = outcome
                ex.process.kill()
                ex.process.wait()
                attempts.end_unreported(self.client, self.limits, outcome, message,
                                        [task_run_id], retry_delay)
                logger.warning("task run %s %s on executor %s", task_run_id, outcome,
                               ex.executor_id)

    # -- lifecycle --------------------------------------------------------------------------
    def request_stop(self, signum: int, frame: Any) -> None:
        """First signal: drain. Executors get the same request."""
        if not self.stopping:
            logger.info("worker %s: stop requested (signal %s); finishing running tasks",
                        self.worker_id, signum)
        self.stopping = True
        for ex in self.executors:
            if ex.process is not None and ex.process.poll() is None:
                ex.process.send_signal(signal.SIGTERM)

    def _spawn(self, ex: _Executor) -> None:
        cmd = [sys.executable, "-m", "flowkit.workers.executor", "--redis-url", self.url,
               "--worker-id", self.worker_id, "--executor-id", ex.executor_id,
               "--slot", str(ex.slot.path)]
        for name in self.queues:
            cmd += ["--queue", name]
        if self.config.burst:
            cmd.append("--burst")
        ex.slot.clear()
        ex.killed_for = ""
        ex.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def run(self) -> int:
        """Serve until stopped; the exit code is 0 after a clean drain."""
        workers.register_worker(self.client, self.worker_id, self.queues,
                                self.config.concurrency, __version__)
        logger.info("worker %s serving %s with %d executors on %s", self.worker_id,
                    ", ".join(self.queues), self.config.concurrency, redact(self.url))
        for ex in self.executors:
            self._spawn(ex)
        try:
            return self._supervise()
        finally:
            for ex in self.executors:
                ex.slot.close()
                ex.slot.path.unlink(missing_ok=True)
            try:
                workers.unregister_worker(self.client, self.worker_id, self.queues)
            except Exception as exc:
                logger.warning("could not unregister worker %s: %s", self.worker_id, exc)

    def _supervise(self) -> int:
        parent = self.config.parent_pid
        while True:
            for ex in self.executors:
                if ex.process is not None and ex.process.poll() is not None:
                    self._on_exit(ex)
            if all(ex.process is None for ex in self.executors):
                logger.info("worker %s: all executors exited", self.worker_id)
                return 0
            if parent and not self.stopping and not _pid_alive(parent):
                logger.info("worker %s: parent %d is gone; stopping", self.worker_id, parent)
                self.request_stop(0, None)
            self.duties.run_due()
            time.sleep(TICK_SECONDS)

    # -- executor exits ----------------------------------------------------------------------
    def _on_exit(self, ex: _Executor) -> None:
        assert ex.process is not None
        code = ex.process.returncode
        ex.process = None
        if code != 0 or ex.killed_for:
            try:
                self._recover(ex, code)
            except Exception as exc:  # Redis away: the leases expire and the reaper recovers
                logger.warning("worker %s: recovering executor %s failed: %s", self.worker_id,
                               ex.executor_id, exc)
        if self.stopping or (self.config.burst and code == 0 and not ex.killed_for):
            return
        ex.restarts += 1
        if not ex.killed_for:
            logger.warning("executor %s exited with %s; restarting (restart #%d)",
                           ex.executor_id, _describe_exit(code), ex.restarts)
        self._spawn(ex)

    def _recover(self, ex: _Executor, code: int) -> None:
        """After an executor died: the attempt it was running crashed (unless the supervisor
        killed it and recorded why); what it had only claimed goes back to the queue."""
        running = ex.slot.read()
        if running is not None and not ex.killed_for:
            attempts.end_unreported(
                self.client, self.limits, "crashed",
                f"the executor process running this task exited with {_describe_exit(code)} "
                f"on worker {self.worker_id}", [running.task_run_id])
        held = attempts.processing(self.client, [ex.executor_id])
        rest = [i for i in held if running is None or i != running.task_run_id]
        if rest:
            attempts.release(self.client, self.limits, self.worker_id, ex.executor_id, rest)


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
