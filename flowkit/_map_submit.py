"""How a submit or map goes out: its calls built one at a time, signed and queued in chunks.

A map of a million calls must not hold a million pickled calls, nor keep its caller waiting
until the last one is queued. So ``map()`` validates and queues its first ``SYNC_RUNS`` calls
itself (a small map behaves as it always did: refused whole before anything is written, queued
when ``map()`` returns), and a :class:`MapSubmission` thread queues the rest, chunk by chunk,
in call order, building each call only when its chunk goes out. A later chunk that cannot go
out (too large, Redis refuses it) ends every future of the map with that error and cancels
what was queued; an interrupt or a cancelled flow stops it between chunks.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flowkit._submitting import send_submit
from flowkit.errors import ConfigurationError
from flowkit.states import RunState
from flowkit.store.functions import ERROR_TYPES

if TYPE_CHECKING:
    from flowkit.driver import Driver
    from flowkit.futures import TaskFuture
    from flowkit.store.enqueue_stream import EnqueueStream
    from flowkit.store.task_runs import AdhocRecord, CacheOptions, TaskRunSpec

#: A map is sent in chunks of at most this many calls (tasks.py also bounds their bytes), the
#: first chunk small so that workers start at once.
FIRST_CHUNK_RUNS, MAX_CHUNK_RUNS = 32, 512
#: Calls a map validates and queues before it returns (five chunks: 32, 64, ... 512).
SYNC_RUNS = 992
#: Chunks handed to the sending thread and not yet in Redis, at most.
IN_FLIGHT_CHUNKS = 2

Call = tuple[tuple[Any, ...], dict[str, Any]]
R = TypeVar("R")


class unmapped(Generic[R]):  # noqa: N801 - Prefect's name
    """Wraps an argument of :meth:`Task.map` that every call receives whole."""

    def __init__(self, value: R) -> None:
        self.value = value


def _is_mapped(value: Any) -> bool:
    return (not isinstance(value, (unmapped, str, bytes, bytearray, dict))
            and isinstance(value, Iterable))


class MapCalls:
    """The calls of one submit/map, each built when it is needed (not a million up front).

    Mapped arguments are copied to lists once (a caller changing its list after ``map()``
    returned must not change calls still to go out), except ranges and tuples, which cannot
    change; :meth:`release` drops the copies' references as chunks go out.
    """

    def __init__(self, args: tuple[Any, ...], kwargs: dict[str, Any], count: int,
                 mapped: set[int | str]) -> None:
        self.args, self.kwargs, self.count, self.mapped = args, kwargs, count, mapped
        #: The values of the one mapped argument when it is the call's only one (the usual
        #: ``task.map(items)``): each call is then built without walking the arguments.
        self._only: Any = args[0] if mapped == {0} and len(args) == 1 and not kwargs else None

    @classmethod
    def single(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> MapCalls:
        return cls(args, kwargs, 1, set())

    @classmethod
    def of_map(cls, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> MapCalls:
        """Raises ConfigurationError: no argument is iterable, or they differ in length."""
        def copy(value: Any) -> Any:
            if isinstance(value, unmapped):
                return value.value
            if not _is_mapped(value):
                return value
            return value if isinstance(value, (range, tuple)) else list(value)

        mapped: set[int | str] = {i for i, v in enumerate(args) if _is_mapped(v)}
        mapped |= {k for k, v in kwargs.items() if _is_mapped(v)}
        new_args = tuple(copy(v) for v in args)
        new_kwargs = {k: copy(v) for k, v in kwargs.items()}
        lengths = {len(new_args[i]) for i in mapped if isinstance(i, int)}
        lengths |= {len(new_kwargs[k]) for k in mapped if isinstance(k, str)}
        if not lengths:
            raise ConfigurationError(f"task {name!r}.map() needs at least one iterable "
                                     "argument; use .submit() for a single call")
        if len(lengths) > 1:
            raise ConfigurationError(f"task {name!r}.map() got iterables of different lengths "
                                     f"{sorted(lengths)}; wrap constant arguments in unmapped()")
        return cls(new_args, new_kwargs, lengths.pop(), mapped)

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> Call:
        if self._only is not None:
            return (self._only[i],), {}
        if not self.mapped:
            return self.args, self.kwargs
        return (tuple(v[i] if n in self.mapped else v for n, v in enumerate(self.args)),
                {k: (v[i] if k in self.mapped else v) for k, v in self.kwargs.items()})

    def release(self, start: int, stop: int) -> None:
        """Forget calls ``start`` to ``stop`` (they went out): their values can be freed."""
        for name in self.mapped:
            values = self.args[name] if isinstance(name, int) else self.kwargs[name]
            if isinstance(values, list):
                values[start:stop] = [None] * (stop - start)


class _ChunkSender:
    """Queues the chunks of one submit in order: the first at once, later ones from a thread
    while the caller signs the next (hashing and socket writes release the GIL).

    Outside flows every chunk carries the call's ad-hoc run record (written by the first);
    the map's last chunk closes the run in that same enqueue.
    """

    def __init__(self, driver: Driver, cache: CacheOptions, futures: list[TaskFuture[Any]],
                 adhoc: AdhocRecord | None = None) -> None:
        self.driver, self.cache, self.adhoc, self.all_futures = driver, cache, adhoc, futures
        self.closed_adhoc = False
        self.pool: Any = None
        self.pending: list[Any] = []  # chunks in flight: concurrent futures
        self.sent = 0  # calls in chunks that are in Redis (or on their way there)
        self.queued = 0  # calls in chunks known to be in Redis
        self.error: BaseException | None = None
        #: Later chunks go out on one connection, each while the server runs the one
        #: before it; the sending thread reads each reply one chunk behind.
        self.stream: EnqueueStream | None = None
        self.unread: tuple[Callable[[], object], int] | None = None

    def send(self, specs: list[TaskRunSpec], upstreams: list[list[TaskFuture[Any]]],
             last: bool = False) -> None:
        adhoc = self.adhoc
        if adhoc is not None:
            from flowkit.store.task_runs import AdhocRecord

            close = adhoc.close and last and self.sent == 0  # (a call in one chunk)
            adhoc = AdhocRecord(adhoc.name, close=close)
            self.closed_adhoc = close
        futures = self.all_futures[self.sent:self.sent + len(specs)]
        self.sent += len(specs)
        if self.sent == len(specs):  # the first chunk: workers start on it at once
            self.driver.submit(specs, upstreams, self.cache, adhoc, futures)
            self.queued = self.sent
            return
        if self.pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flowkit-submit")
        while len(self.pending) >= IN_FLIGHT_CHUNKS:  # memory stays bounded
            self._land(self.pending.pop(0))
        self.pending.append(self.pool.submit(self._submit, specs, upstreams, adhoc, futures))

    def _submit(self, specs: list[TaskRunSpec], upstreams: list[list[TaskFuture[Any]]],
                adhoc: AdhocRecord | None, futures: list[TaskFuture[Any]]) -> int:
        """(The sending thread.) Send this chunk, then read the reply of the one before it:
        how many calls that one queued."""
        if self.stream is None:
            from flowkit.store.enqueue_stream import EnqueueStream

            self.stream = EnqueueStream(self.driver.client)
        finish = send_submit(self.driver, specs, upstreams, self.cache, adhoc, futures,
                             self.stream)
        previous, self.unread = self.unread, (finish, len(specs))
        return self._read(previous)

    def _read_last(self) -> int:
        previous, self.unread = self.unread, None
        return self._read(previous)

    @staticmethod
    def _read(item: tuple[Callable[[], object], int] | None) -> int:
        if item is None:
            return 0
        finish, count = item
        finish()  # re-raises that chunk's error
        return count

    def _land(self, item: Any) -> None:
        self.queued += item.result()  # re-raises that chunk's error

    def wait(self) -> None:
        """Every chunk handed over is in Redis (re-raises a send error)."""
        while self.pending:
            self._land(self.pending.pop(0))
        if self.pool is not None:
            self._land(self.pool.submit(self._read_last))

    def drain(self) -> list[TaskFuture[Any]]:
        """After a failure or an interrupt: wait for the chunks in flight (every reply
        read); the futures of every chunk that was queued, or after a failure of every chunk
        handed over (one sent behind the failed one may be in Redis too: all are cancelled;
        a cancel of a run never written changes nothing)."""
        failed = False
        for item in [*self.pending, *([self.pool.submit(self._read_last)] if self.pool else [])]:
            try:
                self.queued += item.result()
            except BaseException:  # noqa: BLE001 - that chunk was not queued; go on
                failed = True
        self.pending = []
        return self.all_futures[:self.sent if failed else self.queued]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
        if self.stream is not None:
            self.stream.close()


class Submissions:
    """The maps of one driver still queueing in the background."""

    def __init__(self, driver: Driver) -> None:
        self.driver, self._active, self._lock = driver, set[MapSubmission](), threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._active)

    def add(self, submission: MapSubmission) -> None:
        with self._lock:
            self._active.add(submission)

    def discard(self, submission: MapSubmission) -> None:
        with self._lock:
            self._active.discard(submission)

    def stop(self, flow_run_ids: set[str] | None, reason: str) -> None:
        """Stop the maps of ``flow_run_ids`` (None: those outside flows): the chunk on its
        way lands, nothing after it goes out, and the futures never sent end CANCELLED.
        Interrupts and cancels call this before they cancel what was sent."""
        flows = self.driver._flow_threads
        with self._lock:
            chosen = [m for m in self._active if m.flow_run_id not in flows
                      ] if flow_run_ids is None else [
                          m for m in self._active if m.flow_run_id in flow_run_ids]
        for submission in chosen:
            submission.stop(reason)

    def cancel_unsent(self, future: TaskFuture[Any]) -> bool:
        """End a map's future whose chunk has not gone out yet: it never will (True), or
        False when its task run was queued (then Redis cancels it)."""
        with self.driver._lock:
            if future.done() or future.task_run_id in self.driver._futures or not self._active:
                return False
            future._set_done(RunState.CANCELLED, None, {
                "error_type": ERROR_TYPES["cancelled"],
                "error_message": "cancelled before it was queued"})
            return True

    def finish(self, flow_run_ids: set[str] | None = None) -> None:
        """Wait until every map (of ``flow_run_ids``) still queueing has queued it all."""
        with self._lock:
            chosen = [m for m in self._active
                      if flow_run_ids is None or m.flow_run_id in flow_run_ids]
        for submission in chosen:
            submission.join()


class MapSubmission:
    """The background queueing of a map's calls past its first ``SYNC_RUNS``."""

    def __init__(self, driver: Driver, sender: _ChunkSender, flow_run_id: str, task_name: str,
                 send_range: Callable[[int, int, bool], None], start: int, count: int,
                 ended: Callable[[bool], None]) -> None:
        self.driver, self.sender, self.flow_run_id = driver, sender, flow_run_id
        self.task_name, self.send_range, self.ended = task_name, send_range, ended
        self.start_at, self.count = start, count
        self._stopping: str | None = None
        self._thread = threading.Thread(target=self._run, name="flowkit-map", daemon=True)

    def start(self) -> None:
        self.driver.submissions.add(self)
        self._thread.start()

    def join(self) -> None:
        self._thread.join()

    def stop(self, reason: str) -> None:
        """Send nothing more; the chunk in flight lands; futures never sent end CANCELLED."""
        self._stopping = reason
        self._thread.join()

    def _run(self) -> None:
        error: BaseException | None = None
        try:
            for start in range(self.start_at, self.count, MAX_CHUNK_RUNS):
                if self._stopping is not None:
                    break
                stop = min(start + MAX_CHUNK_RUNS, self.count)
                self.send_range(start, stop, stop == self.count)
            self.sender.wait()
        except BaseException as exc:  # noqa: BLE001 - ends the map's futures with it
            error = exc
        finally:
            queued = self.sender.drain()
            self.sender.close()
            try:
                self._settle(error, queued)
            finally:
                self.driver.submissions.discard(self)
                self.ended(self.sender.closed_adhoc)

    def _settle(self, error: BaseException | None, queued: list[TaskFuture[Any]]) -> None:
        futures = self.sender.all_futures
        if error is not None:
            kind = f"{type(error).__module__}.{type(error).__qualname__}"
            message = (f"map of task {self.task_name!r} failed to submit after "
                       f"{self.sender.queued} of {self.count} calls were queued "
                       f"({type(error).__name__}: {error}); the queued ones were cancelled")
            # One error for all its futures: a million of them share the dict.
            self.driver.end_futures(futures, RunState.FAILED, kind, message)
            ids = [f.task_run_id for f in queued]
        elif self._stopping is not None:
            self.driver.end_futures(futures[len(queued):], RunState.CANCELLED,
                                    ERROR_TYPES["cancelled"], self._stopping)
            return
        else:
            return
        try:
            self.driver.cancel_task_runs(ids, message)
        except Exception:  # best effort: Redis may refuse this too (full, away)
            pass
