"""One warm executor process: claim, run, record, repeat (no fork per task).

In steady state an attempt costs one round trip: the outcomes of finished task runs and the
claim of the next ones travel in the same pipeline. Only when every queue is empty does the
executor block on Redis (BLMOVE on one queue, BLMPOP on the queues' bells for several), so an
idle pool costs nothing and a new task starts at once. How much it claims at once is the
BatchPolicy's decision.

An executor never claims without a live supervisor (only the supervisor renews leases): the
kernel kills it when the supervisor dies (process_tree.die_with_parent), and it checks its
parent before every claim, busy or idle, for kernels without that request.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowkit.errors import StoreConnectionError
from flowkit.logs import buffered_task_logs
from flowkit.serializers import SigningKey, load_signing_key
from flowkit.store import attempts, functions
from flowkit.store.attempts import Claim
from flowkit.store.connection import connect
from flowkit.store.limits import Limits
from flowkit.store.logs import Line, add_lines
from flowkit.workers.batching import BatchPolicy
from flowkit.workers.contact import Contact
from flowkit.workers.execution import Attempt, ExecutionContext, run_attempt
from flowkit.workers.process_tree import die_with_parent
from flowkit.workers.slots import Slot

logger = logging.getLogger(__name__)

#: Seconds one blocking pop waits before the loop checks for shutdown.
BLOCK_SECONDS = 1.0
#: Seconds an executor keeps retrying to record an outcome while Redis is unreachable.
RECORD_RETRY_SECONDS = 60.0


@dataclass(frozen=True)
class ExecutorConfig:
    """Everything an executor needs, read once at its process's entry point."""

    url: str
    worker_id: str
    executor_id: str
    queues: list[str]
    burst: bool
    key: SigningKey
    limits: Limits
    lease_seconds: float
    connect_timeout: float
    socket_timeout: float
    slot_path: Path | None = None
    #: The supervisor's pid; None: this process's parent at start.
    supervisor_pid: int | None = None


class Executor:
    """The loop of one executor process."""

    def __init__(self, config: ExecutorConfig) -> None:
        self.config = config
        self.client = connect(config.url, connect_timeout=config.connect_timeout,
                              socket_timeout=max(config.socket_timeout, BLOCK_SECONDS + 5))
        slot = Slot(config.slot_path) if config.slot_path else None
        self.ctx = ExecutionContext(self.client, config.key, config.queues[0], slot=slot)
        self.limits = config.limits
        self.worker_id, self.executor_id = config.worker_id, config.executor_id
        self.queues = config.queues
        self.policy = BatchPolicy()
        self.stopping = False
        self.parent_pid = config.supervisor_pid or os.getppid()
        self.contact = Contact(f"executor {config.executor_id}", logger)
        #: Whether the last claim got as many task runs as it asked for (more likely wait).
        self.more_queued = False

    def request_stop(self, signum: int, frame: Any) -> None:
        """Finish the running attempt, then exit (SIGTERM/SIGINT)."""
        self.stopping = True

    def supervisor_alive(self) -> bool:
        """Checked before every claim (one getppid call): an orphaned executor stops."""
        if os.getppid() == self.parent_pid:
            return True
        if not self.stopping:
            logger.warning("supervisor %d is gone; executor stops without claiming",
                           self.parent_pid)
        self.stopping = True
        return False

    def run(self) -> int:
        """Serve until asked to stop (or, in burst mode, until the queues are empty)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowkit-flush") as flusher:
            return self._loop(flusher)

    def _loop(self, flusher: ThreadPoolExecutor) -> int:
        batch: deque[Claim] = deque(self._claim() if self.supervisor_alive() else [])
        done: list[tuple[Claim, Attempt]] = []
        inflight: Future[list[Claim]] | None = None
        oldest = 0.0
        while True:
            if not batch:
                if inflight is not None:
                    batch.extend(inflight.result())
                    inflight = None
                    if batch:
                        continue
                batch.extend(self._flush(done, claim=self._may_claim()))
                done = []
                if batch:
                    continue
                if self.stopping or self.config.burst:
                    return 0
                batch.extend(self._wait_for_work())
                continue
            claimed = batch.popleft()
            if not batch and inflight is None and self.more_queued and self._may_claim():
                # The last task in hand, and the last claim took all it asked for: claim what
                # follows (recording what finished) while this one runs, so that no round trip
                # sits between two tasks. Not after a wake-up from idle (W2's single calls):
                # there the queue is likely empty and the extra round trip would delay the
                # outcome.
                inflight = flusher.submit(self._flush, done, True, None,
                                          self.policy.next_claim(0))
                done = []
            started = time.perf_counter()
            attempt = run_attempt(self.ctx, claimed)
            finished = time.perf_counter()
            self.policy.observe(finished - started)
            if not done:
                oldest = finished
            done.append((claimed, attempt))
            if batch and (not self._may_claim() or self.policy.is_slow(finished - started)):
                # Slower than the batch promised (or stopping, or orphaned): the rest of the batch
                # goes back to the queue for idle executors instead of waiting behind us.
                if inflight is not None:
                    batch.extend(inflight.result())
                    inflight = None
                self._flush(done, claim=False, give_back=list(batch))
                batch.clear()
                done = []
            elif batch and inflight is None and self.policy.flush_now(finished - oldest):
                # Record the outcomes, and claim what follows the task in hand, in the
                # background: the round trip overlaps the next task instead of delaying it.
                inflight = flusher.submit(self._flush, done, self._may_claim(), None,
                                          self.policy.next_claim(len(batch)))
                done = []

    def _may_claim(self) -> bool:
        return not self.stopping and self.supervisor_alive()

    def _flush(self, done: list[tuple[Claim, Attempt]], claim: bool,
               give_back: list[Claim] | None = None, limit: int | None = None) -> list[Claim]:
        """Record outcomes, give back unstarted claims and (optionally) claim the next batch,
        in one round trip, after the task log lines buffered so far (same round trip)."""
        with buffered_task_logs() as lines:
            return self._record(done, claim, give_back, limit, lines)

    def _record(self, done: list[tuple[Claim, Attempt]], claim: bool,
                give_back: list[Claim] | None, limit: int | None,
                lines: list[Line]) -> list[Claim]:
        if not done and not claim and not give_back and not lines:
            return []

        finish_at = 0  # the finish reply's index: the log lines' writes come first
        token = attempts.new_claim_token()  # one per round trip, however often it is sent

        def build(pipe: Any) -> None:
            nonlocal finish_at
            if lines:
                add_lines(pipe, lines)
            finish_at = len(pipe)
            if done:
                attempts.finish(self.client, self.limits, self.worker_id, self.executor_id,
                                [(c, a.outcome) for c, a in done], pipe=pipe)
            if give_back:
                attempts.release(self.client, self.limits, self.worker_id, self.executor_id,
                                 [c.id for c in give_back], pipe=pipe)
            if claim:
                attempts.claim(self.client, self.limits, self.worker_id, self.executor_id,
                               self.queues, lease_seconds=self.config.lease_seconds,
                               limit=limit or self.policy.batch_size, pipe=pipe, token=token)

        delay, deadline = 0.1, time.monotonic() + RECORD_RETRY_SECONDS
        while True:
            try:
                replies = functions.execute(self.client, build)
            except StoreConnectionError as exc:  # cut off: keep the outcomes, retry a while
                self.contact.failed(exc)
                if time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception as exc:  # Redis restarting or full: keep outcomes, retry a while
                if time.monotonic() > deadline:
                    raise
                logger.warning("recording outcomes failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self.contact.ok()
            if done:
                attempts.log_refused(replies[finish_at])  # stale outcomes the fence refused
            if not claim:
                return []
            claims = self._with_bodies(replies[-1])
            self.more_queued = len(claims) >= (limit or self.policy.batch_size)
            return claims

    def _claim(self, taken: str = "") -> list[Claim]:
        claims = self._with_bodies(attempts.claim(
            self.client, self.limits, self.worker_id, self.executor_id, self.queues,
            lease_seconds=self.config.lease_seconds, limit=self.policy.batch_size, taken=taken,
            token=attempts.new_claim_token()))
        # A claim of one says nothing about what follows; a full batch of several does.
        self.more_queued = len(claims) >= max(2, self.policy.batch_size)
        return claims

    def _with_bodies(self, raw: Any) -> list[Claim]:
        return attempts.fetch_bodies(self.client, attempts.parse_claims(raw, time.time()))

    def _wait_for_work(self) -> list[Claim]:
        if not self.supervisor_alive():  # the blocking pop claims too
            return []
        try:
            woken, task_run_id = attempts.wait_for_work(self.client, self.executor_id,
                                                        self.queues, BLOCK_SECONDS)
        except StoreConnectionError as exc:
            self.contact.failed(exc)
            time.sleep(1.0)
            return []
        self.contact.ok()
        if not woken:
            return []
        # One queue: the id is already on our processing list. Several: a bell rang, and the
        # claim takes whatever is first in priority order.
        claims = self._claim(task_run_id)
        if claims and not self.supervisor_alive():
            # Orphaned while blocked: what the pop took goes back to the front, unstarted.
            self._flush([], claim=False, give_back=claims)
            return []
        return claims


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m flowkit.workers.executor`` (started by the supervisor);
    the settings are read here, once."""
    from flowkit.settings import get_settings

    parser = argparse.ArgumentParser(prog="flowkit-executor")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--executor-id", required=True)
    parser.add_argument("--queue", action="append", required=True)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--slot", type=Path, default=None,
                        help="shared-memory file telling the supervisor what runs")
    parser.add_argument("--supervisor-pid", type=int, default=None,
                        help="die when this process (the parent) is gone")
    ns = parser.parse_args(argv)
    # First, before any import or connection: a supervisor that died while this process
    # started leaves the parent changed, and the kernel's request only covers later deaths.
    die_with_parent()
    if ns.supervisor_pid and os.getppid() != ns.supervisor_pid:
        return 0
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s executor {ns.executor_id} %(levelname)s %(message)s")
    settings = get_settings()
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    executor = Executor(ExecutorConfig(
        url=ns.redis_url, worker_id=ns.worker_id, executor_id=ns.executor_id, queues=ns.queue,
        burst=ns.burst, key=load_signing_key(secret, settings.home),
        limits=Limits.from_settings(settings), lease_seconds=settings.lease_seconds,
        connect_timeout=settings.connect_timeout, socket_timeout=settings.socket_timeout,
        slot_path=ns.slot, supervisor_pid=ns.supervisor_pid))
    signal.signal(signal.SIGTERM, executor.request_stop)
    signal.signal(signal.SIGINT, executor.request_stop)
    sys.path.insert(0, os.getcwd())
    return executor.run()


if __name__ == "__main__":
    sys.exit(main())
