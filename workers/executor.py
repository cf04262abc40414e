"""One warm executor process: claim, run, record, repeat (no fork per task).

In steady state an attempt costs one round trip: the finish of one task run and the claim of
the next travel in the same pipeline. Only when every queue is empty does the executor block on
Redis (BLMOVE on one queue, BLMPOP on the queues' bells for several), so an idle pool costs
nothing and a new task starts at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections import deque
from pathlib import Path
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from flowkit.errors import StoreConnectionError
from flowkit.settings import get_settings
from flowkit.store import lua, queue as queue_store
from flowkit.store.connection import connect
from flowkit.store.queue import Claim
from flowkit.serializers import load_signing_key
from flowkit.workers.execution import Attempt, ExecutionContext, run_attempt
from flowkit.workers.slots import Slot

logger = logging.getLogger(__name__)

#: Seconds one blocking pop waits before the loop checks for shutdown.
BLOCK_SECONDS = 1.0
#: Seconds an executor keeps retrying to record an outcome while Redis is unreachable.
RECORD_RETRY_SECONDS = 60.0
#: Fast tasks are claimed in batches of about this much expected work...
BATCH_TARGET_SECONDS = 0.002
#: ...but never more than this many at once.
MAX_BATCH = 32
#: Tasks up to this long (on average) are claimed one ahead of the one running.
PREFETCH_MAX_SECONDS = 0.05
#: A task slower than this (and than 3x the average) makes the executor give back the rest
#: of its batch to the queue, for idle executors.
RELEASE_AFTER_SECONDS = 0.005
#: Outcomes wait at most this long to share a round trip with later ones.
FLUSH_AFTER_SECONDS = 0.002


class Executor:
    """The loop of one executor process."""

    def __init__(self, url: str, worker_id: str, executor_id: str, queues: list[str],
                 burst: bool, slot: Slot | None = None) -> None:
        settings = get_settings()
        self.client = connect(url, connect_timeout=settings.connect_timeout,
                              socket_timeout=max(settings.socket_timeout, BLOCK_SECONDS + 5))
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        self.ctx = ExecutionContext(self.client, load_signing_key(secret, settings.home),
                                    settings.inline_result_bytes, queues[0], slot=slot)
        self.lease_seconds = settings.lease_seconds
        self.worker_id, self.executor_id = worker_id, executor_id
        self.queues, self.burst = queues, burst
        self.result_ttl_ms = settings.result_ttl_seconds * 1000
        self.stopping = False
        self.parent_pid = os.getppid()
        self.mean_seconds = 1.0
        self.batch_size = 1

    def request_stop(self, signum: int, frame: Any) -> None:
        """Finish the running attempt, then exit (SIGTERM/SIGINT)."""
        self.stopping = True

    def run(self) -> int:
        """Serve until asked to stop (or, in burst mode, until the queues are empty)."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowkit-flush") as flusher:
            return self._loop(flusher)

    def _loop(self, flusher: ThreadPoolExecutor) -> int:
        batch: deque[Claim] = deque(self._claim())
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
                batch.extend(self._flush(done, claim=not self.stopping))
                done = []
                if batch:
                    continue
                if self.stopping or self.burst:
                    return 0
                batch.extend(self._wait_for_work())
                continue
            claimed = batch.popleft()
            started = time.perf_counter()
            attempt = run_attempt(self.ctx, claimed)
            finished = time.perf_counter()
            self._observe(finished - started)
            if not done:
                oldest = finished
            done.append((claimed, attempt))
            slow = finished - started > max(RELEASE_AFTER_SECONDS, 3 * self.mean_seconds)
            if batch and (self.stopping or slow):
                # Slower than the batch promised (or shutting down): the rest of the batch
                # goes back to the queue for idle executors instead of waiting behind us.
                if inflight is not None:
                    batch.extend(inflight.result())
                    inflight = None
                self._flush(done, claim=False, give_back=list(batch))
                batch.clear()
                done = []
            elif batch and inflight is None and (finished - oldest > FLUSH_AFTER_SECONDS
                                                 or self.mean_seconds > FLUSH_AFTER_SECONDS):
                # Record the outcomes, and claim what follows the task in hand, in the
                # background: the round trip overlaps the next task instead of delaying it.
                inflight = flusher.submit(self._flush, done, not self.stopping, None,
                                          max(1, self.batch_size - len(batch)))
                done = []

    def _observe(self, seconds: float) -> None:
        """Track task duration; fast tasks are claimed several at a time."""
        self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds
        size = max(1, int(BATCH_TARGET_SECONDS / max(self.mean_seconds, 1e-6)))
        if self.mean_seconds <= PREFETCH_MAX_SECONDS:
            size += 1  # hold the next task in hand: no round trip between two tasks
        self.batch_size = max(1, min(MAX_BATCH, size))

    def _flush(self, done: list[tuple[Claim, Attempt]], claim: bool,
               give_back: list[Claim] | None = None, limit: int | None = None) -> list[Claim]:
        """Record outcomes, give back unstarted claims and (optionally) claim the next batch,
        in one round trip."""
        if not done and not claim and not give_back:
            return []
        def build(pipe: Any) -> None:
            for claimed, attempt in done:
                queue_store.finish(self.client, pipe, self.worker_id, self.executor_id, claimed,
                                   attempt.queue, attempt.outcome, self.result_ttl_ms)
            queue_store.settle_cache(
                self.client, [c.id for c, a in done if a.outcome.settles_cache],
                self.result_ttl_ms, self.ctx.inline_result_bytes, pipe=pipe)
            if give_back:
                queue_store.release(self.client, self.worker_id, self.executor_id,
                                    [c.id for c in give_back], pipe=pipe)
            if claim:
                queue_store.claim(self.client, self.worker_id, self.executor_id, self.queues,
                                  lease_seconds=self.lease_seconds,
                                  limit=limit or self.batch_size, pipe=pipe)

        delay, deadline = 0.1, time.monotonic() + RECORD_RETRY_SECONDS
        while True:
            try:
                replies = lua.execute(self.client, build)
            except Exception as exc:  # Redis restarting: keep the outcomes, retry for a while
                if time.monotonic() > deadline:
                    raise
                logger.warning("recording outcomes failed (%s); retrying in %.1fs", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            return self._with_bodies(replies[-1]) if claim else []

    def _claim(self, taken: str = "") -> list[Claim]:
        return self._with_bodies(queue_store.claim(
            self.client, self.worker_id, self.executor_id, self.queues,
            lease_seconds=self.lease_seconds, limit=self.batch_size, taken=taken))

    def _with_bodies(self, raw: Any) -> list[Claim]:
        return queue_store.fetch_bodies(self.client, queue_store.parse_claims(raw))

    def _wait_for_work(self) -> list[Claim]:
        try:
            woken, task_run_id = queue_store.wait_for_work(self.client, self.executor_id,
                                                           self.queues, BLOCK_SECONDS)
        except StoreConnectionError as exc:
            logger.warning("%s", exc)
            time.sleep(1.0)
            return []
        if not woken:
            if os.getppid() != self.parent_pid:
                logger.warning("supervisor %d is gone; executor stops", self.parent_pid)
                self.stopping = True
            return []
        # One queue: the id is already on our processing list. Several: a bell rang, and the
        # claim takes whatever is first in priority order.
        return self._claim(task_run_id)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m flowkit.workers.executor`` (started by the supervisor)."""
    parser = argparse.ArgumentParser(prog="flowkit-executor")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--worker-id", required=True)
    parser.add_argument("--executor-id", required=True)
    parser.add_argument("--queue", action="append", required=True)
    parser.add_argument("--burst", action="store_true")
    parser.add_argument("--slot", type=Path, default=None,
                        help="shared-memory file telling the supervisor what runs")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s executor {ns.executor_id} %(levelname)s %(message)s")
    executor = Executor(ns.redis_url, ns.worker_id, ns.executor_id, ns.queue, ns.burst,
                        Slot(ns.slot) if ns.slot else None)
    signal.signal(signal.SIGTERM, executor.request_stop)
    signal.signal(signal.SIGINT, executor.request_stop)
    sys.path.insert(0, os.getcwd())
    return executor.run()


if __name__ == "__main__":
    sys.exit(main())
