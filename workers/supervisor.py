"""``flowkit worker start``: a supervisor with N warm executor processes.

The supervisor, not the executors, keeps the worker alive in Redis: its duties (duties.py)
renew the heartbeat and the leases of running attempts, reap the expired leases of dead
workers, queue retries whose delay has passed, kill executors stuck past a hard timeout or
running a cancelled task, and sweep old runs. Its loop restarts executors that die. On SIGTERM
it stops taking work, lets running attempts finish for at most --grace seconds, hands back
what still runs and exits 0.

Every executor runs in its own process group, killed whole on a hard timeout, a cancel, a
lost lease, a drain's end or any exit, so no task leaves children behind; executors die with
their supervisor (process_tree.py). A worker cut off from Redis logs it once (contact.py),
kills the attempts whose leases it could not renew for a lease's length, and starts nothing
until Redis answers again.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowkit._ids import new_id
from flowkit._version import __version__
from flowkit.errors import StoreConnectionError
from flowkit.store import attempts, clock, server, workers
from flowkit.store.connection import connect, redact
from flowkit.store.limits import Limits
from flowkit.workers import duties, keycheck
from flowkit.workers.contact import Contact, RestartBackoff
from flowkit.workers.process_tree import kill_group
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
    #: Seconds a drain (SIGTERM, `flowkit worker stop`) waits for running attempts.
    grace_seconds: float = 30.0
    burst: bool = False
    parent_pid: int | None = None
    name: str | None = None
    allow_eviction: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, url: str, queues: list[str], concurrency: int,
                      **options: Any) -> WorkerConfig:
        """The configuration of a worker on ``url`` serving ``queues``."""
        if options.get("grace_seconds") is None:
            options["grace_seconds"] = settings.stop_grace_seconds
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
    #: Set when the supervisor killed the process on purpose: "timed_out" and "cancelled"
    #: (outcome already recorded), "lost" (leases could not be renewed), "handed_back".
    killed_for: str = ""
    #: Set when the supervisor asked it to exit to be started again (new queues).
    restart_requested: bool = False
    started: float = field(default_factory=time.monotonic)
    #: Monotonic time of the next start (None: not to be started again).
    restart_at: float | None = None
    #: The exit code of a process whose claims are not settled yet (Redis was unreachable).
    unsettled: int | None = None
    backoff: RestartBackoff = field(default_factory=RestartBackoff)


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
        # Before any executor exists: leave out queues whose drivers use another key.
        self.queues = keycheck.servable_queues(self.client, self.queues)
        self.contact = Contact(f"worker {self.worker_id}", logger)
        self.executors = [
            _Executor(i, f"{self.worker_id}.{i}",
                      Slot(slot_dir() / f"flowkit-{self.worker_id}-{os.getpid()}.{i}.slot",
                           create=True))
            for i in range(config.concurrency)]
        self.stopping = False
        #: Monotonic time past which a drain hands running attempts back (None: not draining).
        self.stop_deadline: float | None = None
        # The lease watchdog thread and the main loop both touch the executors' processes.
        self._lock = threading.RLock()
        self.duties = duties.DutyRunner([
            duties.HardTimeouts(self, config.hard_timeout_grace_seconds),
            duties.LeaseRenewal(self, config.heartbeat_seconds, config.lease_seconds),
            duties.RetryPromotion(self), duties.CancelWatch(self), duties.Reaper(self),
            duties.StopRequests(self),
            duties.RetentionSweep(self, config.run_retention_days),
            keycheck.ProbeWatch(self, config.queues), duties.DriverWatch(self),
            duties.LostStateNotice(self)], self.worker_id, contact=self.contact)

    # -- what duties see (duties.Host) ------------------------------------------------------
    def executor_ids(self) -> list[str]:
        return [ex.executor_id for ex in self.executors]

    def running(self) -> dict[str, Running]:
        return {r.task_run_id: r for ex in self.executors
                if ex.process is not None and not ex.killed_for and (r := ex.slot.read())}

    def kill(self, task_run_id: str, outcome: str, message: str,
             retry_delay: float | None = None) -> None:
        for ex in self.executors:
            with self._lock:
                running = ex.slot.read()
                if ex.process is None or not running or running.task_run_id != task_run_id:
                    continue
                ex.killed_for = outcome
                kill_group(ex.process.pid)
                ex.process.wait()
            try:
                attempts.end_unreported(self.client, self.limits, outcome, message,
                                        [task_run_id], retry_delay)
            except Exception:
                # Redis away (a hard timeout while cut off): the outcome cannot be recorded,
                # so once Redis answers the attempt is handed back to run again (its id must
                # not stay on the processing list, renewed forever).
                ex.killed_for = "lost"
                raise
            logger.warning("task run %s %s on executor %s", task_run_id, outcome,
                           ex.executor_id)

    def drain(self, grace: float | None = None) -> None:
        """Stop taking work; hand back what still runs ``grace`` seconds from now (None: the
        worker's --grace). A second request only ever shortens the wait."""
        grace = self.config.grace_seconds if grace is None else max(0.0, grace)
        deadline = time.monotonic() + grace
        if self.stop_deadline is None or deadline < self.stop_deadline:
            self.stop_deadline = deadline
        if not self.stopping:
            logger.info("worker %s: stopping; running tasks get %gs to finish, then go back "
                        "to the front of their queues", self.worker_id, grace)
        self.stopping = True
        for ex in self.executors:
            if ex.process is not None and ex.process.poll() is None:
                ex.process.send_signal(signal.SIGTERM)

    # -- lifecycle --------------------------------------------------------------------------
    def request_stop(self, signum: int, frame: Any) -> None:
        """First SIGTERM/SIGINT: drain within --grace. Another one: hand back at once."""
        if self.stopping:
            logger.info("worker %s: signal %s again; handing running tasks back now",
                        self.worker_id, signum)
            self.drain(0.0)
        else:
            self.drain()

    def _spawn(self, ex: _Executor) -> None:
        cmd = [sys.executable, "-m", "flowkit.workers.executor", "--redis-url", self.url,
               "--worker-id", self.worker_id, "--executor-id", ex.executor_id,
               "--slot", str(ex.slot.path), "--supervisor-pid", str(os.getpid())]
        for name in self.queues:
            cmd += ["--queue", name]
        if self.config.burst:
            cmd.append("--burst")
        with self._lock:
            ex.slot.clear()
            ex.killed_for = ""
            ex.restart_at = None
            ex.started = time.monotonic()
            # Its own session: the task's children share its process group, killed with it.
            ex.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)

    def run(self) -> int:
        """Serve until stopped; the exit code is 0 after a clean drain."""
        workers.register_worker(self.client, self.worker_id, self.queues,
                                self.config.concurrency, __version__)
        self.contact.ok()
        logger.info("worker %s serving %s with %d executors on %s", self.worker_id,
                    ", ".join(self.queues), self.config.concurrency, redact(self.url))
        clock.warn_if_skewed(self.client, f"worker {self.worker_id}'s host")
        for ex in self.executors:
            self._spawn(ex)
        watchdog = LeaseWatchdog(self)
        watchdog.start()
        try:
            return self._supervise()
        finally:
            watchdog.stop()
            for ex in self.executors:
                if ex.process is not None:
                    kill_group(ex.process.pid)
                    ex.process.wait()
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
                self._check_exit(ex)
            if self.stop_deadline is not None and time.monotonic() >= self.stop_deadline:
                self._hand_back()
                return 0
            if all(ex.process is None and ex.restart_at is None and ex.unsettled is None
                   for ex in self.executors):
                logger.info("worker %s: all executors exited", self.worker_id)
                return 0
            if not self.contact.is_lost:
                self._restart_due()
            if parent and not self.stopping and not _pid_alive(parent):
                logger.info("worker %s: parent %d is gone; stopping", self.worker_id, parent)
                self.drain()
            self.duties.run_due()
            time.sleep(TICK_SECONDS)

    # -- executor exits ----------------------------------------------------------------------
    def _check_exit(self, ex: _Executor) -> None:
        with self._lock:
            if ex.process is None or ex.process.poll() is None:
                return
            code = ex.process.returncode
            kill_group(ex.process.pid)  # whatever its task started dies with it
            ex.process = None
        lived = time.monotonic() - ex.started
        if code != 0 or ex.killed_for:
            ex.unsettled = code  # its claims: settled now, or once Redis answers again
            if not self.contact.is_lost and ex.killed_for != "lost":
                self._settle(ex)
        asked = ex.restart_requested
        ex.restart_requested = False
        if self.stopping or (self.config.burst and code == 0 and not ex.killed_for
                             and not asked):
            return
        ex.restarts += 1
        delay = 0.0 if ex.killed_for or asked else ex.backoff.delay(lived)
        ex.restart_at = time.monotonic() + delay
        if asked:
            logger.info("executor %s restarting to serve %s", ex.executor_id,
                        ", ".join(self.queues))
        elif not ex.killed_for:
            logger.warning("executor %s exited with %s; restarting%s (restart #%d)",
                           ex.executor_id, _describe_exit(code),
                           f" in {delay:.1f}s" if delay >= 1 else "", ex.restarts)

    def _restart_due(self) -> None:
        """Settle the claims of executors that died while Redis was away, then start the
        executors whose restart is due (never while cut off: they could not claim anyway)."""
        now = time.monotonic()
        for ex in self.executors:
            if ex.unsettled is not None and not self._settle(ex):
                continue
            if ex.process is None and ex.restart_at is not None and now >= ex.restart_at:
                self._spawn(ex)

    def _settle(self, ex: _Executor) -> bool:
        try:
            self._recover(ex, ex.unsettled or 0)
        except StoreConnectionError as exc:
            self.contact.failed(exc)
            return False
        except Exception as exc:
            logger.warning("worker %s: recovering executor %s failed: %s", self.worker_id,
                           ex.executor_id, exc)
        ex.unsettled = None
        return True

    def _recover(self, ex: _Executor, code: int) -> None:
        """After an executor exited: the attempt it was running crashed (unless the supervisor
        killed it and recorded why, or killed it to hand it back); what it had only claimed
        goes back to the front of the queue."""
        running = ex.slot.read()
        handed_back = ex.killed_for in ("lost", "handed_back")
        if running is not None and not ex.killed_for and code != 0:
            attempts.end_unreported(
                self.client, self.limits, "crashed",
                f"the executor process running this task exited with {_describe_exit(code)} "
                f"on worker {self.worker_id}", [running.task_run_id])
        held = attempts.processing(self.client, [ex.executor_id])
        rest = [i for i in held if handed_back or running is None or i != running.task_run_id]
        if rest:
            attempts.release(self.client, self.limits, self.worker_id, ex.executor_id, rest)

    def _hand_back(self) -> None:
        """The drain's grace is over: kill what still runs and give it back to the front of
        its queue at once (no crash counted, no wait for the lease)."""
        running = list(self.running())
        with self._lock:
            for ex in self.executors:
                if ex.process is not None:
                    ex.killed_for = "handed_back"
                    kill_group(ex.process.pid)
                    ex.process.wait()
                    ex.process = None
                    ex.unsettled = ex.unsettled if ex.unsettled is not None else 0
        for ex in self.executors:
            if ex.unsettled is not None:
                self._settle(ex)
        if running:
            logger.warning("worker %s: grace over; handed back %s to the front of the queue",
                           self.worker_id, ", ".join(running))


class LeaseWatchdog:
    """A thread that kills running attempts once their leases could not be renewed for
    ``lease_seconds``: by then the reaper of another worker may have queued them again, so
    running on would only waste the host and race the next attempt. The supervisor's loop
    can sit in one Redis call for several socket timeouts under a partition, so this check
    cannot live in that loop."""

    def __init__(self, supervisor: WorkerSupervisor) -> None:
        self.supervisor = supervisor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="flowkit-lease-watchdog",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        sup = self.supervisor
        while not self._stop.wait(TICK_SECONDS * 2):
            silent = sup.contact.silent_for()
            if silent < sup.config.lease_seconds:
                continue
            killed = []
            with sup._lock:
                for ex in sup.executors:
                    running = ex.slot.read()
                    if ex.process is not None and not ex.killed_for and running:
                        ex.killed_for = "lost"
                        kill_group(ex.process.pid)
                        killed.append(running.task_run_id)
            if killed:
                logger.warning("worker %s: leases not renewed for %.1fs (Redis unreachable); "
                               "killed %s, which will run again once their leases expire",
                               sup.worker_id, silent, ", ".join(killed))


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
