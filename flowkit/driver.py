"""The driver's side of flowkit: one Driver per process, connected lazily.

It writes task runs and queues them, resolves futures from its reply stream (the
ReplyListener), releases or fails held task runs as their upstreams end (the pure
DependencyTracker decides), and makes sure some worker serves each queue it uses
(LocalWorkers on the embedded default).
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from flowkit import _replies as replies
from flowkit import serializers
from flowkit._adhoc import AdhocRuns
from flowkit._dependencies import Decision, DependencyTracker
from flowkit._driver_heartbeat import DriverHeartbeat
from flowkit._ids import new_id
from flowkit._listener import ReplyListener
from flowkit._local_workers import LocalWorkers
from flowkit._lost_state import CHECK_SECONDS, PROBE_RUNS, LostStateWatch, Verdict
from flowkit._map_submit import Submissions
from flowkit._rate import LogEcho
from flowkit._submitting import send_submit
from flowkit._threads import raise_in_thread
from flowkit.errors import CancelledRun, ConfigurationError, StoreConnectionError
from flowkit.futures import TaskFuture
from flowkit.settings import Settings, get_settings
from flowkit.states import RunState
from flowkit.store import functions, keys, probes, server, task_runs, workers
from flowkit.store.connection import call, connect, redact
from flowkit.store.limits import Limits

if TYPE_CHECKING:
    import redis



#: Seconds between checks that some worker serves the queues a driver waits on.
WORKER_CHECK_SECONDS = 2.0
#: The error type of task runs that did not run because an upstream failed.
UPSTREAM_FAILED = "flowkit.errors.UpstreamFailed"
#: The error types of futures failed by the driver itself (Redis lost them, or stayed away).
RUN_LOST, CUT_OFF = "flowkit.errors.RunLost", "flowkit.errors.StoreConnectionError"


class Driver:
    """Connection, listener and bookkeeping of one driver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.limits = Limits.from_settings(settings)
        self.embedded = settings.redis_url is None
        if self.embedded:
            from flowkit.embedded import ensure_server

            self.url = ensure_server(settings.home, port=settings.server_port).url()
        else:
            self.url = settings.redis_url or ""
        self.client: redis.Redis = connect(self.url, connect_timeout=settings.connect_timeout,
                                           socket_timeout=settings.socket_timeout)
        server.check_eviction(self.client, allow=settings.allow_eviction, who="driver")
        self._lost_state = LostStateWatch(self.client, server.establish_identity(self.client))
        self._waiting = 0
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        serializers.check_env_key(secret)
        self.key = serializers.load_signing_key(secret, settings.home)
        self.driver_id = new_id()
        self.reply_key = keys.reply(self.driver_id)
        self.pid = os.getpid()
        self._futures: dict[str, TaskFuture[Any]] = {}
        #: Futures end under this one Condition, and waiters wait on it (none has its own).
        self.settled = threading.Condition(threading.Lock())
        #: Pending futures per queue (the workers check looks at these, not at every future).
        self._queue_counts: dict[str, int] = {}
        #: Maps whose later chunks a background thread is still queueing.
        self.submissions = Submissions(self)
        #: Task runs whose enqueue is on its way (the lost-state check leaves them alone).
        self._inflight: set[str] = set()
        self._dependencies = DependencyTracker()
        self._lock = threading.RLock()
        self._stored_functions: set[str] = set()
        self._queues_checked: dict[str, float] = {}
        self._warned_queues: set[str] = set()
        self._local_workers = LocalWorkers(self.url, settings.home, settings.executor_count)
        self.heartbeat = DriverHeartbeat(self.client, self.limits, self.driver_id,
                                         settings.partition_tolerance_seconds)
        self.adhoc = AdhocRuns(self)
        self._flow_threads: dict[str, int] = {}
        self._stopping = False
        log_echo = LogEcho(settings.echo_logs)  # run log lines to stderr, rate-limited
        self.echo, self.echo_summaries = log_echo.echo, log_echo.summaries
        listener_client = connect(self.url, connect_timeout=settings.connect_timeout,
                                  socket_timeout=settings.socket_timeout + 5)
        self._listener = ReplyListener(listener_client, self.reply_key, self._handle,
                                       periodic=self._watch, period=CHECK_SECONDS,
                                       settled=lambda: not self._futures)
        self._listener.start()
        atexit.register(self.close)

    # -- submitting -------------------------------------------------------------------------
    def store_function(self, digest: str, blob: bytes) -> None:
        """Store a pickled task function once per driver (refreshing its expiry)."""
        if digest not in self._stored_functions:
            call(self.client, self.client.set, keys.function(digest), blob,
                 ex=self.settings.result_ttl_seconds)
            self._stored_functions.add(digest)

    def flow_started(self, flow_run_id: str) -> None:
        """Remember which thread runs a flow, so that a cancellation can interrupt it, and
        cover the run with this driver's heartbeat."""
        self._flow_threads[flow_run_id] = threading.get_ident()
        self.heartbeat.attach(flow_run_id)

    def flow_ended(self, flow_run_id: str) -> None:
        self._flow_threads.pop(flow_run_id, None)

    def submit(self, specs: list[task_runs.TaskRunSpec], upstreams: list[list[TaskFuture[Any]]],
               cache: task_runs.CacheOptions | None = None,
               adhoc: task_runs.AdhocRecord | None = None,
               futures: list[TaskFuture[Any]] | None = None) -> list[TaskFuture[Any]]:
        """Write and queue task runs; those with unfinished upstream futures wait here.
        ``adhoc``: the call's ad-hoc run, recorded by the same enqueue. ``futures``: made
        before (a map's); one already ended (cancelled before it was sent) is left out."""
        return send_submit(self, specs, upstreams, cache, adhoc, futures)()

    def _pop_future(self, task_run_id: str) -> TaskFuture[Any] | None:
        """Forget a pending future (with ``_lock`` held)."""
        future = self._futures.pop(task_run_id, None)
        if future is not None and (left := self._queue_counts.pop(future.queue) - 1):
            self._queue_counts[future.queue] = left
        return future

    def end_futures(self, futures: list[TaskFuture[Any]], state: RunState, error_type: str,
                    message: str) -> None:
        """End the pending ones among ``futures`` here, sent or not (a map that failed or
        stopped midway), with one shared error; what is held on them fails."""
        error = {"error_type": error_type, "error_message": message}
        decisions = []
        with self._lock:
            ending = [f for f in futures if not f.done()]
            for future in ending:
                self._pop_future(future.task_run_id)
                decisions.append(self._dependencies.finished(future.task_run_id, False))
        for future in ending:
            future._set_done(state, None, error)
        for decision in decisions:
            if decision.ready or decision.failed:
                self._apply(decision, {})

    def cancel_task_run(self, task_run_id: str) -> bool:
        """Cancel one task run (dropped if waiting, killed within seconds if running)."""
        dropped, flagged = task_runs.cancel(self.client, self.limits, task_run_ids=[task_run_id],
                                            message=f"task run {task_run_id} cancelled by request")
        return bool(dropped or flagged)

    def cancel_task_runs(self, task_run_ids: list[str], message: str) -> tuple[int, int]:
        """Cancel many task runs in one bulk cancel (it chunks them itself and sweeps each
        queue once): (cancelled at once, running attempts flagged to be killed)."""
        return task_runs.cancel(self.client, self.limits, task_run_ids=task_run_ids,
                                message=message)

    def unfinished_adhoc(self, flow_run_ids: set[str] | None) -> list[TaskFuture[Any]]:
        """Unfinished futures of work submitted outside flows (of ``flow_run_ids`` only, if
        given); a flow running in another thread keeps its own."""
        with self._lock:
            futures = list(self._futures.values())
        return [f for f in futures if not f.done() and f.flow_run_id not in self._flow_threads
                and (flow_run_ids is None or f.flow_run_id in flow_run_ids)]

    # -- workers ----------------------------------------------------------------------------
    def check_workers(self, queues: set[str], force: bool = False) -> None:
        """Make sure each queue has a live worker: start local ones, or say we are waiting."""
        now = time.monotonic()
        for name in queues:
            last = self._queues_checked.get(name)
            if not force and last is not None and now - last < WORKER_CHECK_SECONDS:
                continue
            self._queues_checked[name] = now
            if workers.live_workers_for(self.client, name) > 0:
                continue
            if self.embedded and self.settings.start_local_workers:
                if not self._local_workers.serving(name):
                    self._local_workers.start(name)
            elif name not in self._warned_queues:
                self._warned_queues.add(name)
                sys.stderr.write(
                    f"flowkit: waiting: no worker serves queue {name!r} at {redact(self.url)}; "
                    f"start one with `flowkit worker start -q {name}` and FLOWKIT_REDIS_URL set "
                    "to this URL\n")

    # -- waiting and results ----------------------------------------------------------------
    def wait_for(self, future: TaskFuture[Any], timeout: float | None) -> None:
        """Wait for a future. The listener thread checks on workers and on lost state while
        anyone waits; here only the clock is read, so a waiter never blocks on Redis and
        learns in time when Redis stayed away longer than the partition tolerance."""
        if future.done():
            return
        deadline = None if timeout is None else time.monotonic() + timeout
        with self.waiting():
            while not future.done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return
                slice_ = CHECK_SECONDS if remaining is None else min(remaining, CHECK_SECONDS)
                with self.settled:
                    self.settled.wait_for(future.done, slice_)
                if future.done():
                    return
                if not self._listener.is_alive():
                    raise StoreConnectionError(
                        f"lost the connection to Redis at {redact(self.url)} while waiting for "
                        f"task {future.task_name!r}; run `flowkit run show` later to see it")
                self.judge_silence()

    @contextlib.contextmanager
    def waiting(self) -> Iterator[None]:
        """While some caller is inside, the listener checks on lost state and workers."""
        with self._lock:
            self._waiting += 1
        try:
            yield
        finally:
            with self._lock:
                self._waiting -= 1

    def judge_silence(self) -> None:
        """Past FLOWKIT_PARTITION_TOLERANCE_SECONDS without Redis, fail every pending future
        (no Redis call: a waiter calls this once per slice)."""
        silent, bound = self._listener.silent_for(), self.settings.partition_tolerance_seconds
        if silent <= bound:
            return
        message = (f"gave up waiting: Redis at {redact(self.url)} has been unreachable for "
                   f"{silent:.0f} s, longer than FLOWKIT_PARTITION_TOLERANCE_SECONDS={bound:g} "
                   "(the task run may still finish there; `flowkit run show` tells once Redis "
                   "is back)")
        with self._lock:
            pending = list(self._futures)
        self._fail_locally(pending, RunState.FAILED, CUT_OFF, message)

    def _watch(self) -> None:
        """Run by the listener about once a second while someone waits: fail the futures of
        task runs Redis lost, and make sure workers serve the queues waited on."""
        with self._lock:
            if not self._waiting or not self._futures:
                return
            # The oldest few (a million pending must not cost a million steps a second).
            sample = [i for i in itertools.islice(self._futures, PROBE_RUNS + len(self._inflight))
                      if i not in self._inflight][:PROBE_RUNS]
            queues = set(self._queue_counts)
        verdict = self._lost_state.check(sample, everything=self._settled_pending)
        if verdict is not None:
            self._fail_lost(verdict)
        self.check_workers(queues)

    def _settled_pending(self) -> list[str]:
        """Every pending task run whose enqueue has landed."""
        with self._lock:
            return [i for i in self._futures if i not in self._inflight]

    def _fail_lost(self, verdict: Verdict) -> None:
        with self._lock:  # what this driver wrote once may be gone: write it again
            self._stored_functions.clear()
        probes.forget_written(self.client)
        if verdict.everything:  # nothing of theirs is left in Redis to update
            self.adhoc.forget_all()
            self._fail_locally(verdict.lost, RunState.CRASHED, RUN_LOST,
                               f"was lost: {verdict.cause}; submit it again")
            return
        with self._lock:
            names = {i: f.task_name for i in verdict.lost if (f := self._futures.get(i))}
        for task_run_id in verdict.lost:
            self._complete(task_run_id, RunState.CRASHED, None, {
                "error_type": RUN_LOST, "error_message":
                    f"task {names.get(task_run_id, '?')!r} (run {task_run_id}) was lost: "
                    f"{verdict.cause}; submit it again"})

    def _fail_locally(self, task_run_ids: list[str], state: RunState, error_type: str,
                      cause: str) -> None:
        """End futures here without writing to Redis (it lost them, or cannot be reached)."""
        with self._lock:
            futures = [f for i in task_run_ids if (f := self._pop_future(i))]
            for future in futures:
                self._dependencies.finished(future.task_run_id, False)
        for future in futures:
            future._set_done(state, None, {
                "error_type": error_type, "error_message":
                    f"task {future.task_name!r} (run {future.task_run_id}) {cause}"})

    def load_result(self, task_run_id: str, payload: bytes | None) -> Any:
        """Unpickle a result from the reply message, or fetch it from Redis."""
        if payload is None:
            payload = task_runs.read_result(self.client, task_run_id)
            if payload is None:
                raise ConfigurationError(
                    f"the result of task run {task_run_id} has expired from Redis "
                    f"(FLOWKIT_RESULT_TTL_SECONDS={self.settings.result_ttl_seconds})")
        return serializers.loads(serializers.unseal(self.key, payload))

    def load_exception(self, data: Any) -> BaseException | None:
        """Rebuild a task's exception from its sealed pickle, or None when impossible."""
        if not data:
            return None
        try:
            value = serializers.loads(serializers.unseal(self.key, data))
        except Exception:
            return None
        return value if isinstance(value, BaseException) else None

    def read_task_state(self, task_run_id: str) -> RunState:
        """The current state of a task run as stored in Redis."""
        return task_runs.get_task_state(self.client, task_run_id) or RunState.PENDING

    # -- replies ----------------------------------------------------------------------------
    def _handle(self, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"kind")
        if kind == b"cancel_flow":
            thread_id = self._flow_threads.get(fields[b"id"].decode())
            if thread_id is not None:
                raise_in_thread(thread_id, CancelledRun)
        elif kind in (b"log", b"log_skipped"):
            self.echo({k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
        elif kind == b"done":
            self.echo_summaries()
            for task_run_id, state, payload, error in replies.outcomes(fields):
                self._complete(task_run_id, state, payload, error)

    def _complete(self, task_run_id: str, state: RunState, payload: bytes | None,
                  error: dict[str, Any]) -> None:
        with self._lock:
            future = self._pop_future(task_run_id)
            decision = self._dependencies.finished(task_run_id, state.is_success)
        if future is not None:
            future._set_done(state, payload, error)
        name = future.task_name if future is not None else "?"
        self._apply(decision, {task_run_id: (name, state)})

    def _apply(self, decision: Decision, ended: dict[str, tuple[str, RunState]]) -> None:
        """Carry out what the dependency tracker decided: queue the ready, fail the rest (and
        resolve their futures here: the driver knows before Redis replies)."""
        task_runs.release_held(self.client, self.limits, decision.ready)
        if not decision.failed:
            return
        failures: list[tuple[str, str]] = []
        with self._lock:
            futures = {f.task_run_id: self._pop_future(f.task_run_id)
                       for f in decision.failed}
        for failed in decision.failed:
            future = futures[failed.task_run_id]
            upstream_name, upstream_state = ended.get(failed.upstream_id, ("?", RunState.FAILED))
            message = (f"task {future.task_name if future else '?'!r} did not run: upstream "
                       f"task {upstream_name!r} (run {failed.upstream_id}) ended "
                       f"{upstream_state.value}")
            failures.append((failed.task_run_id, message))
            if future is not None:
                ended[failed.task_run_id] = (future.task_name, RunState.FAILED)
        task_runs.fail_unstarted(self.client, self.limits, failures, RunState.FAILED,
                                 UPSTREAM_FAILED)
        for (task_run_id, message) in failures:
            future = futures[task_run_id]
            if future is not None:
                future._set_done(RunState.FAILED, None,
                                 {"error_type": UPSTREAM_FAILED, "error_message": message})

    # -- shutdown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Leave the ad-hoc flow runs still open (each ends now, or by itself when its last
        task run ends), stop the heartbeat, local workers and the listener."""
        if self._stopping or os.getpid() != self.pid:
            return
        self._stopping = True
        if _script_ended_by_interrupt():
            from flowkit._interrupts import cancel_after_interrupt

            cancel_after_interrupt(self)
        else:  # map() returned before all its chunks were queued: they all are before exit
            try:
                self.submissions.finish()
            except KeyboardInterrupt:
                from flowkit._interrupts import cancel_after_interrupt

                cancel_after_interrupt(self)
        self._listener.stop()
        self._drop_held_at_exit()
        self.adhoc.close_all()
        try:
            self.heartbeat.stop()
            self.client.delete(self.reply_key)
        except Exception:  # Redis away at exit: the run stays as it was, nothing to undo
            pass
        self._local_workers.stop()

    def _drop_held_at_exit(self) -> None:
        """Task runs still waiting for upstream futures can only be released by this driver:
        leaving, it cancels them (saying why) instead of leaving them pending forever."""
        with self._lock:
            held = self._dependencies.held()
        if not held:
            return
        try:
            task_runs.fail_unstarted(
                self.client, self.limits,
                [(i, "cancelled: its driver exited before the upstream tasks it waited on "
                     "finished") for i in held], RunState.CANCELLED,
                functions.ERROR_TYPES["cancelled"])
        except Exception:  # Redis away at exit: DriverWatch ends them once the driver is lost
            pass


def _script_ended_by_interrupt() -> bool:
    """A script (not a REPL or notebook) is exiting on a Ctrl-C nobody caught: the work it
    submitted outside flows and left unfinished is cancelled, not left to run on."""
    return (isinstance(getattr(sys, "last_value", None), KeyboardInterrupt)
            and not hasattr(sys, "ps1") and not sys.flags.interactive
            and "IPython" not in sys.modules)


_driver: Driver | None = None
_driver_lock = threading.Lock()


def get_driver() -> Driver:
    """This process's Driver, created on first use (and again after a fork)."""
    global _driver
    with _driver_lock:
        if _driver is None or _driver.pid != os.getpid():
            _driver = Driver(get_settings())
        return _driver


def reset_driver() -> None:
    """Close and forget the Driver (tests, or after changing settings)."""
    global _driver
    with _driver_lock:
        if _driver is not None:
            _driver.close()
        _driver = None
    get_settings.cache_clear()
