"""The driver's side of flowkit: one Runtime per process, connected lazily.

It writes task runs and queues them, listens on its reply stream for completions and log lines
(one blocking XREAD, no polling), resolves futures, releases tasks whose upstream futures are
done, and makes sure some worker serves each queue it uses.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowkit import serializers
from flowkit.errors import CancelledRun, ConfigurationError, StoreConnectionError
from flowkit.futures import TaskFuture
from flowkit.settings import Settings, get_settings
from flowkit.states import RunState
from flowkit.store import keys, queue as queue_store, runs
from flowkit.store.connection import call, connect, redact

if TYPE_CHECKING:
    import redis

#: Seconds between checks that some worker serves the queues a driver waits on.
WORKER_CHECK_SECONDS = 2.0


@dataclass
class _Held:
    """A submitted task run waiting for its upstream futures."""

    spec: runs.TaskRunSpec
    future: TaskFuture[Any]
    waiting_on: set[str] = field(default_factory=set)


class Runtime:
    """Connection, listener and bookkeeping of one driver process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.embedded = settings.redis_url is None
        if self.embedded:
            from flowkit.embedded import ensure_server

            info = ensure_server(settings.home, port=settings.server_port)
            self.url = info.url()
        else:
            self.url = settings.redis_url or ""
        self.client: redis.Redis = connect(self.url, connect_timeout=settings.connect_timeout,
                                           socket_timeout=settings.socket_timeout)
        serializers.check_env_key(settings.secret_key.get_secret_value()
                                  if settings.secret_key else None)
        self.key = serializers.load_signing_key(
            settings.secret_key.get_secret_value() if settings.secret_key else None, settings.home)
        self.driver_id = runs.new_id()
        self.reply_key = keys.reply(self.driver_id)
        self.pid = os.getpid()
        self._futures: dict[str, TaskFuture[Any]] = {}
        self._held: dict[str, _Held] = {}
        self._dependents: dict[str, list[str]] = {}
        self._lock = threading.RLock()
        self._stored_functions: set[str] = set()
        self._queues_checked: dict[str, float] = {}
        self._warned_queues: set[str] = set()
        self._local_workers: list[subprocess.Popen[bytes]] = []
        self._adhoc_flow_run: str | None = None
        self._flow_threads: dict[str, int] = {}
        self._stopping = False
        self._listener_client = connect(self.url, connect_timeout=settings.connect_timeout,
                                        socket_timeout=settings.socket_timeout + 5)
        self._listener = threading.Thread(target=self._listen, name="flowkit-listener",
                                          daemon=True)
        self._listener.start()
        atexit.register(self.close)

    # -- submitting -------------------------------------------------------------------------
    def store_function(self, digest: str, blob: bytes) -> None:
        """Store a pickled task function once per driver (refreshing its expiry)."""
        if digest not in self._stored_functions:
            call(self.client, self.client.set, keys.function(digest), blob,
                 ex=self.settings.result_ttl_seconds)
            self._stored_functions.add(digest)

    def adhoc_flow_run(self) -> str:
        """The flow run that holds task calls made outside any flow in this process."""
        with self._lock:
            if self._adhoc_flow_run is None:
                name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "interactive"
                self._adhoc_flow_run = runs.new_id()
                runs.create_flow_run(self.client, self._adhoc_flow_run, f"adhoc: {name}",
                                     kind="adhoc", reply_to=self.reply_key)
            return self._adhoc_flow_run

    def flow_started(self, flow_run_id: str) -> None:
        """Remember which thread runs a flow, so that a cancellation can interrupt it."""
        self._flow_threads[flow_run_id] = threading.get_ident()

    def flow_ended(self, flow_run_id: str) -> None:
        self._flow_threads.pop(flow_run_id, None)

    def _interrupt_flow(self, flow_run_id: str) -> None:
        thread_id = self._flow_threads.get(flow_run_id)
        if thread_id is not None:
            from flowkit.flows import raise_in_thread

            raise_in_thread(thread_id, CancelledRun)

    def submit(self, specs: list[runs.TaskRunSpec], upstreams: list[list[TaskFuture[Any]]],
               cache: runs.CacheSettings | None = None) -> list[TaskFuture[Any]]:
        """Write and queue task runs; those with unfinished upstream futures wait here."""
        futures = [TaskFuture[Any](self, s.id, s.task_name, s.queue) for s in specs]
        failed_upstream: list[tuple[_Held, TaskFuture[Any]]] = []
        with self._lock:
            for spec, future, ups in zip(specs, futures, upstreams):
                future.cache_key = spec.cache_key
                self._futures[spec.id] = future
                pending = {u.task_run_id for u in ups if not u.done()}
                bad = next((u for u in ups if u.done() and not u.state.is_success), None)
                if pending or bad is not None:
                    spec.held = True
                    held = _Held(spec, future, pending)
                    self._held[spec.id] = held
                    for upstream_id in pending:
                        self._dependents.setdefault(upstream_id, []).append(spec.id)
                    if bad is not None:
                        failed_upstream.append((held, bad))
        runs.enqueue_task_runs(self.client, specs, cache)
        for held, bad in failed_upstream:
            with self._lock:
                self._held.pop(held.spec.id, None)
            self._fail_upstream(held, bad.task_name, bad.task_run_id, bad.state)
        self.check_workers({s.queue for s in specs}, force=False)
        return futures

    # -- workers ----------------------------------------------------------------------------
    def check_workers(self, queues: set[str], force: bool = False) -> None:
        """Make sure each queue has a live worker: start local ones, or say we are waiting."""
        now = time.monotonic()
        for name in queues:
            last = self._queues_checked.get(name)
            if not force and last is not None and now - last < WORKER_CHECK_SECONDS:
                continue
            self._queues_checked[name] = now
            if queue_store.live_workers_for(self.client, name) > 0:
                continue
            if self.embedded and self.settings.start_local_workers:
                if not self._local_workers_alive_for(name):
                    self._start_local_workers(name)
            elif name not in self._warned_queues:
                self._warned_queues.add(name)
                sys.stderr.write(
                    f"flowkit: waiting: no worker serves queue {name!r} at {redact(self.url)}; "
                    f"start one with `flowkit worker start -q {name}` and FLOWKIT_REDIS_URL set "
                    "to this URL\n")

    def _local_workers_alive_for(self, name: str) -> bool:
        return any(p.poll() is None and getattr(p, "flowkit_queue", None) == name
                   for p in self._local_workers)

    def _start_local_workers(self, name: str) -> None:
        log_dir = self.settings.home / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"worker-{name}-{os.getpid()}.log", "ab")
        cmd = [sys.executable, "-m", "flowkit", "worker", "start", "--queue", name,
               "--concurrency", str(self.settings.executor_count), "--redis-url", self.url,
               "--parent-pid", str(os.getpid())]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)
        proc.flowkit_queue = name  # type: ignore[attr-defined]
        self._local_workers.append(proc)

    # -- waiting and results ----------------------------------------------------------------
    def wait_for(self, future: TaskFuture[Any], timeout: float | None) -> None:
        """Wait for a future, checking on workers while waiting."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not future.done():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return
            slice_ = WORKER_CHECK_SECONDS if remaining is None else min(remaining,
                                                                         WORKER_CHECK_SECONDS)
            if future._done.wait(slice_):
                return
            if not self._listener.is_alive():
                raise StoreConnectionError(
                    f"lost the connection to Redis at {redact(self.url)} while waiting for "
                    f"task {future.task_name!r}; run `flowkit run show` later to see its result")
            self.check_workers({future.queue})

    def load_result(self, task_run_id: str, payload: bytes | None) -> Any:
        """Unpickle a result from the reply message, or fetch it from Redis."""
        if payload is None:
            payload = call(self.client, self.client.get, keys.result(task_run_id))
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
        raw = call(self.client, self.client.hget, keys.task_run(task_run_id), "state")
        return RunState(raw.decode()) if raw else RunState.PENDING

    # -- the listener -----------------------------------------------------------------------
    def _listen(self) -> None:
        client, last = self._listener_client, "0-0"
        failures = 0
        while not self._stopping:
            try:
                reply: Any = client.xread({self.reply_key: last}, count=2000, block=1000)
                failures = 0
            except Exception as exc:  # connection trouble: back off, bounded, then give up
                failures += 1
                if self._stopping or failures > 30:
                    sys.stderr.write(f"flowkit: listener stopped: {exc}\n")
                    return
                time.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            if not reply:
                continue
            entries = reply[0][1]
            for entry_id, fields in entries:
                self._handle(fields)
            last = entries[-1][0].decode()
            try:
                client.xtrim(self.reply_key, minid=last, approximate=True)
            except Exception:
                pass

    def _handle(self, fields: dict[bytes, bytes]) -> None:
        kind = fields.get(b"kind")
        if kind == b"cancel_flow":
            self._interrupt_flow(fields[b"id"].decode())
            return
        if kind == b"log":
            self.echo({k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()})
            return
        if kind != b"done":
            return
        task_run_id = fields[b"id"].decode()
        state = RunState(fields[b"state"].decode())
        error = {k.decode(): (v if k == b"exception" else v.decode("utf-8", "replace"))
                 for k, v in fields.items()
                 if k in (b"error_type", b"error_message", b"traceback", b"exception")}
        self._complete(task_run_id, state, fields.get(b"result"), error)

    def _complete(self, task_run_id: str, state: RunState, payload: bytes | None,
                  error: dict[str, Any]) -> None:
        with self._lock:
            future = self._futures.pop(task_run_id, None)
            dependents = self._dependents.pop(task_run_id, [])
        if future is not None:
            future._set_done(state, payload, error)
        release: list[_Held] = []
        fail: list[_Held] = []
        with self._lock:
            for dependent_id in dependents:
                held = self._held.get(dependent_id)
                if held is None:
                    continue
                held.waiting_on.discard(task_run_id)
                if not state.is_success:
                    del self._held[dependent_id]
                    fail.append(held)
                elif not held.waiting_on:
                    del self._held[dependent_id]
                    release.append(held)
        if release:
            runs.release_task_runs(self.client, [(h.spec.id, h.spec.queue) for h in release])
        name = future.task_name if future is not None else "?"
        for held in fail:
            self._fail_upstream(held, name, task_run_id, state)

    def _fail_upstream(self, held: _Held, upstream_name: str, upstream_id: str,
                       upstream_state: RunState) -> None:
        message = (f"task {held.spec.task_name!r} did not run: upstream task "
                   f"{upstream_name!r} (run {upstream_id}) ended {upstream_state.value}")
        runs.fail_without_running(self.client, held.spec.id, held.spec.flow_run_id,
                                  RunState.FAILED, "flowkit.errors.UpstreamFailed", message)
        self._complete(held.spec.id, RunState.FAILED, None,
                       {"error_type": "flowkit.errors.UpstreamFailed", "error_message": message})

    def echo(self, record: dict[str, str]) -> None:
        """Print one run log line to this driver's stderr."""
        if not self.settings.echo_logs:
            return
        ts = float(record.get("ts", time.time()))
        stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
        who = record.get("name", "")
        if record.get("task_run_id"):
            who = f"{who}-{record['task_run_id'][:6]}"
        sys.stderr.write(f"{stamp} | {record.get('level', 'INFO'):<7} | {who} - "
                         f"{record.get('message', '')}\n")

    # -- shutdown ---------------------------------------------------------------------------
    def close(self) -> None:
        """Finish the ad-hoc flow run, stop local workers and the listener."""
        if self._stopping or os.getpid() != self.pid:
            return
        self._stopping = True
        try:
            if self._adhoc_flow_run is not None:
                run = runs.get_flow_run(self.client, self._adhoc_flow_run) or {}

                def count(*states: str) -> int:
                    return sum(int(run.get(f"n_{s}", 0) or 0) for s in states)

                # Work still queued or running goes on without this driver: the run stays
                # RUNNING and its counters keep moving as workers finish it.
                if not count("pending", "running", "retrying"):
                    bad = count("failed", "timed_out", "crashed")
                    runs.set_flow_run_state(self.client, self._adhoc_flow_run, RunState.RUNNING,
                                            RunState.FAILED if bad else RunState.COMPLETED)
            self.client.delete(self.reply_key)
        except Exception:
            pass
        for proc in self._local_workers:
            if proc.poll() is None:
                proc.terminate()
        for proc in self._local_workers:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """This process's Runtime, created on first use (and again after a fork)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None or _runtime.pid != os.getpid():
            _runtime = Runtime(get_settings())
        return _runtime


def reset_runtime() -> None:
    """Close and forget the Runtime (tests, or after changing settings)."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
    get_settings.cache_clear()
