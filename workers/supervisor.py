"""``flowkit worker start``: a supervisor with N warm executor processes.

The supervisor, not the executors, keeps the worker alive in Redis: it renews the heartbeat and
the leases of running attempts (a task hogging the CPU cannot make its worker look dead), reaps
the expired leases of dead workers, queues retries whose delay has passed, kills executors
stuck past a hard timeout or running a cancelled task, and restarts executors that die. On
SIGTERM it stops taking work, lets running attempts finish and exits 0.
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
from typing import Any

from flowkit._version import __version__
from flowkit.settings import get_settings
from flowkit.store import keys, queue as queue_store
from flowkit.store.connection import call, connect, redact
from flowkit.store.runs import new_id
from flowkit.workers.slots import Slot, slot_dir

logger = logging.getLogger(__name__)

#: Seconds between the supervisor's checks of its executors (timeouts, deaths).
TICK_SECONDS = 0.05
#: Seconds between checks for cancelled running tasks and due retries.
POLL_SECONDS = 0.2
#: Seconds between reaps of expired leases.
REAP_SECONDS = 1.0
#: At most this many seconds between retention sweeps (at least two per retention period);
#: one supervisor in the cluster takes each sweep (a Redis lock).
PRUNE_SECONDS = 60.0
#: Longest a sweep may keep the supervisor from its other duties; the rest waits a minute.
PRUNE_BUDGET_SECONDS = 0.5


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

    def __init__(self, url: str, queues: list[str], concurrency: int, *, burst: bool = False,
                 parent_pid: int | None = None, name: str | None = None) -> None:
        self.settings = get_settings()
        self.url, self.queues, self.concurrency = url, queues, concurrency
        self.burst, self.parent_pid = burst, parent_pid
        self.worker_id = name or f"{socket.gethostname()}-{os.getpid()}-{new_id()[:6]}"
        self.client = connect(url, connect_timeout=self.settings.connect_timeout,
                              socket_timeout=self.settings.socket_timeout)
        self.executors = [
            _Executor(i, f"{self.worker_id}.{i}",
                      Slot(slot_dir() / f"flowkit-{self.worker_id}.{i}.slot", create=True))
            for i in range(concurrency)]
        self.stopping = False
        retention = self.settings.run_retention_days * 86400
        self.prune_seconds = max(1.0, min(PRUNE_SECONDS, retention / 2))
        self.limits = queue_store.Limits(self.settings.max_crashes,
                                         self.settings.result_ttl_seconds * 1000,
                                         self.settings.inline_result_bytes)

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
        if self.burst:
            cmd.append("--burst")
        ex.slot.clear()
        ex.killed_for = ""
        ex.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)

    def run(self) -> int:
        """Serve until stopped; the exit code is 0 after a clean drain."""
        queue_store.register_worker(self.client, self.worker_id, self.queues, self.concurrency,
                                    __version__)
        logger.info("worker %s serving %s with %d executors on %s", self.worker_id,
                    ", ".join(self.queues), self.concurrency, redact(self.url))
        for ex in self.executors:
            self._spawn(ex)
        try:
            return self._supervise()
        finally:
            for ex in self.executors:
                ex.slot.close()
                ex.slot.path.unlink(missing_ok=True)
            try:
                queue_store.unregister_worker(self.client, self.worker_id, self.queues)
            except Exception as exc:
                logger.warning("could not unregister worker %s: %s", self.worker_id, exc)

    def _supervise(self) -> int:
        due = {"beat": 0.0, "poll": 0.0, "reap": 0.0, "prune": time.monotonic() + 1.0}
        while True:
            for ex in self.executors:
                if ex.process is not None and ex.process.poll() is not None:
                    self._on_exit(ex)
            if all(ex.process is None for ex in self.executors):
                logger.info("worker %s: all executors exited", self.worker_id)
                return 0
            if self.parent_pid and not self.stopping and not _pid_alive(self.parent_pid):
                logger.info("worker %s: parent %d is gone; stopping", self.worker_id,
                            self.parent_pid)
                self.request_stop(0, None)
            self._enforce_timeouts()
            now = time.monotonic()
            for duty, period, action in (("beat", self.settings.heartbeat_seconds, self._beat),
                                         ("poll", POLL_SECONDS, self._poll),
                                         ("reap", REAP_SECONDS, self._reap),
                                         ("prune", self.prune_seconds, self._prune)):
                if now >= due[duty]:
                    due[duty] = now + period
                    self._safely(action)
            time.sleep(TICK_SECONDS)

    def _safely(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # Redis away for a moment: the next tick tries again
            logger.warning("worker %s: %s failed: %s", self.worker_id, action.__name__, exc)

    # -- duties ------------------------------------------------------------------------------
    def _processing(self) -> list[str]:
        pipe = self.client.pipeline(transaction=False)
        for ex in self.executors:
            pipe.lrange(keys.processing(ex.executor_id), 0, -1)
        return [i.decode() for ids in call(self.client, pipe.execute) for i in ids]

    def _beat(self) -> None:
        """Heartbeat and lease renewal for every attempt this worker holds."""
        held = self._processing()
        running = [r.task_run_id for ex in self.executors if (r := ex.slot.read()) is not None]
        queue_store.heartbeat(self.client, self.worker_id, self.queues, busy=len(running))
        queue_store.renew_leases(self.client, self.worker_id, held, self.settings.lease_seconds,
                                 running=running)

    def _poll(self) -> None:
        """Queue due retries; kill executors whose running task was cancelled."""
        queue_store.promote_due_retries(self.client)
        running = {r.task_run_id: ex for ex in self.executors
                   if ex.process is not None and (r := ex.slot.read()) is not None}
        for task_run_id in queue_store.cancel_requested(self.client, list(running)):
            self._kill(running[task_run_id], task_run_id, "cancelled",
                       "cancelled while running; its executor was stopped")

    def _reap(self) -> None:
        """Crash the attempts of workers that stopped renewing their leases."""
        reaped = queue_store.reap_expired_leases(self.client, self.limits)
        if reaped:
            logger.warning("worker %s: leases expired for %s; those attempts crashed",
                           self.worker_id, ", ".join(reaped))

    def _prune(self) -> None:
        """Delete flow runs past FLOWKIT_RUN_RETENTION_DAYS (one supervisor per period)."""
        days = self.settings.run_retention_days
        if not days or not call(self.client, self.client.set, keys.PRUNE_LOCK, self.worker_id,
                                nx=True, px=int(self.prune_seconds * 1000 * 0.9)):
            return
        from flowkit.store.runs import prune_all

        pruned = prune_all(self.client, time.time() - days * 86400, PRUNE_BUDGET_SECONDS)
        if pruned.flow_runs or pruned.task_runs:
            logger.info("worker %s: deleted %d flow runs and %d task runs older than %g days",
                        self.worker_id, pruned.flow_runs, pruned.task_runs, days)

    def _enforce_timeouts(self) -> None:
        now = time.time()
        for ex in self.executors:
            running = ex.slot.read()
            if (ex.process is not None and not ex.killed_for and running is not None
                    and running.deadline
                    and now > running.deadline + self.settings.hard_timeout_grace_seconds):
                seconds = running.deadline - running.started
                self._kill(ex, running.task_run_id, "timed_out",
                           f"task exceeded timeout_seconds={seconds:g} and ignored the "
                           "interrupt; its executor process was killed and replaced")

    def _kill(self, ex: _Executor, task_run_id: str, outcome: str, message: str) -> None:
        assert ex.process is not None
        ex.killed_for = outcome
        ex.process.kill()
        ex.process.wait()
        queue_store.end_unreported(self.client, outcome, message, [task_run_id], self.limits)
        logger.warning("task run %s %s on executor %s", task_run_id, outcome, ex.executor_id)

    # -- executor exits ----------------------------------------------------------------------
    def _on_exit(self, ex: _Executor) -> None:
        assert ex.process is not None
        code = ex.process.returncode
        ex.process = None
        if code != 0 or ex.killed_for:
            self._safely(lambda: self._recover(ex, code))
        if self.stopping or (self.burst and code == 0 and not ex.killed_for):
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
            queue_store.end_unreported(
                self.client, "crashed",
                f"the executor process running this task exited with {_describe_exit(code)} "
                f"on worker {self.worker_id}", [running.task_run_id], self.limits)
        held = [i.decode() for i in call(self.client, self.client.lrange,
                                          keys.processing(ex.executor_id), 0, -1)]
        rest = [i for i in held if running is None or i != running.task_run_id]
        if rest:
            queue_store.release(self.client, self.worker_id, ex.executor_id, rest)


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
