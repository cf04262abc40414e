"""The supervisor's periodic duties, each a small object behind one protocol.

A duty is whatever a supervisor does on a timer: renew leases, reap dead workers' attempts,
queue due retries, stop cancelled attempts, enforce hard timeouts, sweep old runs. New
subsystems (the scheduler, trigger evaluation, autoscaling) join as duties of their own
instead of growing the supervisor's loop.

While Redis is unreachable, only the duties marked ``while_cut_off`` run (the lease renewal,
which also probes for the way back, and the hard timeouts); the others wait instead of each
blocking the loop for a socket timeout and logging a line. The loss and the return are logged
once, by the supervisor's Contact.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from flowkit.errors import StoreConnectionError
from flowkit.store import attempts, keys, workers
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

    from flowkit.store.limits import Limits
    from flowkit.workers.contact import Contact
    from flowkit.workers.slots import Running

logger = logging.getLogger(__name__)

#: Seconds between checks for cancelled running tasks and due retries.
POLL_SECONDS = 0.2
#: Seconds between checks for a stop request (`flowkit worker stop` acts within a second).
STOP_POLL_SECONDS = 0.5
#: Seconds between reaps of expired leases.
REAP_SECONDS = 1.0
#: At most this many seconds between retention sweeps (at least two per retention period);
#: one supervisor in the cluster takes each sweep (a Redis lock).
PRUNE_SECONDS = 60.0
#: Longest a sweep may keep the supervisor from its other duties; the rest waits its turn.
PRUNE_BUDGET_SECONDS = 0.5


class Host(Protocol):
    """What duties see of their supervisor."""

    client: redis.Redis
    worker_id: str
    queues: list[str]
    limits: Limits
    #: Whether Redis answers; the lease renewal reports its successes here.
    contact: Contact

    def executor_ids(self) -> list[str]:
        """The ids of this worker's executors."""

    def running(self) -> dict[str, Running]:
        """What each live executor runs right now, by task run id (from the slots)."""

    def kill(self, task_run_id: str, outcome: str, message: str,
             retry_delay: float | None = None) -> None:
        """Kill the executor running ``task_run_id`` and record how the attempt ended."""

    def drain(self, grace: float | None = None) -> None:
        """Stop taking work; hand back what still runs after ``grace`` seconds (None: the
        worker's own --grace)."""


class Duty(Protocol):
    """One periodic job of a supervisor."""

    #: Seconds between two runs (0: every tick of the supervisor's loop).
    period: float
    #: Seconds after start before the first run.
    delay: float

    def run(self) -> None:
        """Do the job once; raising is logged and the duty runs again next period."""


class DutyRunner:
    """Runs each duty when it is due; one failing duty does not stop others, and while Redis
    is unreachable only the duties that must keep running do."""

    def __init__(self, duties: list[Duty], worker_id: str,
                 clock: Callable[[], float] = time.monotonic,
                 contact: Contact | None = None) -> None:
        self.duties, self.worker_id, self.clock = duties, worker_id, clock
        self.contact = contact
        start = clock()
        self.due = [start + d.delay for d in duties]

    def run_due(self) -> None:
        now = self.clock()
        for i, duty in enumerate(self.duties):
            if now < self.due[i]:
                continue
            self.due[i] = now + duty.period
            if (self.contact is not None and self.contact.is_lost
                    and not getattr(duty, "while_cut_off", False)):
                continue
            try:
                duty.run()
            except StoreConnectionError as exc:  # logged once, as a change of contact
                if self.contact is None:
                    logger.warning("worker %s: %s failed: %s", self.worker_id,
                                   type(duty).__name__, exc)
                else:
                    self.contact.failed(exc)
            except Exception as exc:  # Redis answered with an error: the next period retries
                logger.warning("worker %s: %s failed: %s", self.worker_id,
                               type(duty).__name__, exc)


class LeaseRenewal:
    """Heartbeat, and the leases of every attempt this worker holds, renewed by the
    supervisor (a task hogging the CPU cannot make its worker look dead). Its successes tell
    the supervisor that Redis answers: the lease watchdog kills what runs once they stop for
    a lease's length."""

    delay = 0.0
    while_cut_off = True

    def __init__(self, host: Host, period: float, lease_seconds: float) -> None:
        self.host, self.period, self.lease_seconds = host, period, lease_seconds

    def run(self) -> None:
        host = self.host
        held = attempts.processing(host.client, host.executor_ids())
        running = list(host.running())
        workers.heartbeat(host.client, host.worker_id, host.queues, busy=len(running))
        attempts.renew_leases(host.client, host.limits, host.worker_id, held,
                              self.lease_seconds, running=running)
        host.contact.ok()


class RetryPromotion:
    """Queues the retries whose delay has passed."""

    period, delay = POLL_SECONDS, 0.0

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(self) -> None:
        attempts.promote_due_retries(self.host.client, self.host.limits)


class CancelWatch:
    """Kills executors whose running task run was cancelled."""

    period, delay = POLL_SECONDS, 0.0

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(self) -> None:
        running = list(self.host.running())
        for task_run_id in attempts.cancel_requested(self.host.client, running):
            self.host.kill(task_run_id, "cancelled",
                           "cancelled while running; its executor was stopped")


class HardTimeouts:
    """Kills executors whose task ignored its soft timeout for longer than the grace."""

    period, delay = 0.0, 0.0
    while_cut_off = True

    def __init__(self, host: Host, grace_seconds: float) -> None:
        self.host, self.grace_seconds = host, grace_seconds

    def run(self) -> None:
        now = time.time()
        for task_run_id, running in self.host.running().items():
            if running.deadline and now > running.deadline + self.grace_seconds:
                seconds = running.deadline - running.started
                self.host.kill(task_run_id, "timed_out",
                               f"task exceeded timeout_seconds={seconds:g} and ignored the "
                               "interrupt; its executor process was killed and replaced",
                               retry_delay=running.timeout_retry_delay)


class StopRequests:
    """Drains the worker when `flowkit worker stop` asked for it (from any host)."""

    period, delay = STOP_POLL_SECONDS, 0.0

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(self) -> None:
        request = workers.take_stop_request(self.host.client, self.host.worker_id)
        if request is not None:
            logger.info("worker %s: stop requested from Redis", self.host.worker_id)
            self.host.drain(None if request < 0 else request)


class Reaper:
    """Crashes the attempts of workers that stopped renewing their leases."""

    period, delay = REAP_SECONDS, 0.0

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(self) -> None:
        reaped = attempts.reap_expired_leases(self.host.client, self.host.limits)
        if reaped:
            logger.warning("worker %s: leases expired for %s; those attempts crashed",
                           self.host.worker_id, ", ".join(reaped))


class RetentionSweep:
    """Deletes flow runs past FLOWKIT_RUN_RETENTION_DAYS (one supervisor per period)."""

    delay = 1.0

    def __init__(self, host: Host, retention_days: float) -> None:
        self.host, self.days = host, retention_days
        self.period = max(1.0, min(PRUNE_SECONDS, retention_days * 86400 / 2))

    def run(self) -> None:
        from flowkit.store.retention import prune_all

        host = self.host
        if not self.days or not call(host.client, host.client.set, keys.PRUNE_LOCK,
                                     host.worker_id, nx=True, px=int(self.period * 900)):
            return
        pruned = prune_all(host.client, host.limits, time.time() - self.days * 86400,
                           PRUNE_BUDGET_SECONDS)
        if pruned.flow_runs or pruned.task_runs:
            logger.info("worker %s: deleted %d flow runs and %d task runs older than %g days",
                        host.worker_id, pruned.flow_runs, pruned.task_runs, self.days)


class DriverWatch:
    """Ends the flow runs of drivers that stopped heartbeating for longer than their partition
    tolerance (judged by the Redis server's clock): each run ends CRASHED ("driver lost") with
    its queued task runs cancelled, one atomic call per run; any supervisor may do it."""

    period, delay = REAP_SECONDS, 0.5

    def __init__(self, host: Host) -> None:
        self.host = host

    def run(self) -> None:
        from flowkit.store import drivers

        client, limits = self.host.client, self.host.limits
        for lost in drivers.lost(client, limits):
            for flow_run_id in lost.runs:
                ended = drivers.end_lost_run(client, limits, lost.driver_id, flow_run_id)
                if ended.ended:
                    logger.warning("worker %s: driver %s of flow run %s is lost: the run "
                                   "crashed; %d queued task runs cancelled, %d running ones "
                                   "stopped", self.host.worker_id, lost.driver_id,
                                   flow_run_id, ended.cancelled, ended.flagged)
            drivers.forget(client, limits, lost.driver_id, only_if_lost=True)


class LostStateNotice:
    """Logs once when Redis lost flowkit's state (restarted empty, flushed: the epoch marker
    vanished or changed), and writes a new marker so that the next loss is noticed too."""

    period, delay = 2.0, 0.0

    def __init__(self, host: Host) -> None:
        self.host = host
        self.epoch: str | None = None

    def run(self) -> None:
        from flowkit.store import server
        from flowkit.store.connection import url_of

        client = self.host.client
        now = server.read_identity(client)
        if self.epoch is not None and now.epoch == self.epoch:
            return
        if self.epoch is not None:
            logger.warning("worker %s: Redis at %s lost flowkit's state (restarted empty or "
                           "flushed: the epoch marker %s); runs and queued work from before are "
                           "gone, their drivers get RunLost", self.host.worker_id,
                           url_of(client), "is gone" if not now.epoch else "changed")
        self.epoch = server.establish_identity(client).epoch
