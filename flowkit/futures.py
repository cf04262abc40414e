"""TaskFuture, wait() and as_completed(): shaped like ``concurrent.futures``."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar

from flowkit.errors import CancelledRun, TaskFailed, TaskTimeout, UpstreamFailed
from flowkit.states import RunState

if TYPE_CHECKING:
    from flowkit.driver import Driver

R = TypeVar("R")

_MISSING = object()


@dataclass(frozen=True)
class ResultRef:
    """Stands in an envelope for the value of an upstream task run; the worker loads it."""

    task_run_id: str
    #: The upstream's cache key, if it has one: it stands for the value in cache keys.
    cache_key: str = ""

    def __flowkit_hash__(self) -> str:
        """In a downstream cache key, an upstream is its own cache key (or its unique run)."""
        return f"cache:{self.cache_key}" if self.cache_key else f"run:{self.task_run_id}"


class TaskFuture(Generic[R]):
    """The eventual result of one task run executing on a worker."""

    # Slots, and no Event, Lock or list of its own: a 1,000,000-task map keeps a million of
    # these pending, so each holds only its fields; waiting and completion share the
    # driver's one Condition (``driver.settled``).
    __slots__ = ("_driver", "task_run_id", "task_name", "queue", "_final_state", "_payload",
                 "_error", "_value", "_callbacks", "observed", "cache_key", "flow_run_id",
                 "keep", "_interrupt_cancelled")

    def __init__(self, driver: Driver, task_run_id: str, task_name: str, queue: str,
                 flow_run_id: str = "") -> None:
        self._driver = driver
        self.task_run_id = task_run_id
        self.task_name = task_name
        self.queue = queue
        self._final_state: RunState | None = None
        self._payload: bytes | None = None
        self._error: dict[str, str | bytes] | None = None
        self._value: Any = _MISSING
        self._callbacks: list[Callable[[TaskFuture[R]], None]] | None = None
        #: True once the caller looked at the outcome (result() or exception()).
        self.observed = False
        #: The run's cache key ("" when the task does not cache).
        self.cache_key = ""
        #: The flow run it belongs to (a flow's, or the ad-hoc run of its call or cell).
        self.flow_run_id = flow_run_id
        #: What Redis keeps of the run once it succeeds ("full" or "summary").
        self.keep = "full"
        self._interrupt_cancelled = False

    def __repr__(self) -> str:
        return f"TaskFuture({self.task_name!r}, id={self.task_run_id!r}, state={self.state.value})"

    # -- completion, called by the driver's listener thread --------------------------------
    def _set_done(self, state: RunState, payload: bytes | None = None,
                  error: dict[str, Any] | None = None) -> None:
        settled = self._driver.settled
        with settled:
            if self._final_state is not None:
                return
            self._payload, self._error = payload, error or None
            self._final_state = state  # last: done() reads it without the lock
            callbacks, self._callbacks = self._callbacks, None
            settled.notify_all()
        for callback in callbacks or ():
            callback(self)

    def add_done_callback(self, fn: Callable[[TaskFuture[R]], None]) -> None:
        """Call ``fn(future)`` when the run ends (at once if it already has)."""
        with self._driver.settled:
            if self._final_state is None:
                if self._callbacks is None:
                    self._callbacks = []
                self._callbacks.append(fn)
                return
        fn(self)

    # -- the public surface ---------------------------------------------------------------
    def done(self) -> bool:
        """True when the task run reached a terminal state."""
        return self._final_state is not None

    @property
    def state(self) -> RunState:
        """The run's state: final once done, else read from Redis."""
        if self._final_state is not None:
            return self._final_state
        return self._driver.read_task_state(self.task_run_id)

    def cancel(self) -> bool:
        """Cancel the run: dropped if still queued, killed within seconds if running.

        Returns:
            False when the run had already ended.
        """
        if self.done():
            return False
        if self._driver.submissions.cancel_unsent(self):
            return True
        return self._driver.cancel_task_run(self.task_run_id)

    def claim_interrupt_cancel(self) -> bool:
        """True once for an unfinished future: an interrupt cancels it (and counts it) once."""
        with self._driver.settled:
            if self._final_state is not None or self._interrupt_cancelled:
                return False
            self._interrupt_cancelled = True
            return True

    def cancelled(self) -> bool:
        """True when the run ended CANCELLED."""
        return self._final_state is RunState.CANCELLED

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run ends or ``timeout`` seconds pass; interrupted (Ctrl-C, a
        notebook's stop button) outside a flow, cancel the work submitted outside flows (in a
        notebook: this cell's) and re-raise. Inside a flow, the flow's run does it."""
        try:
            self._driver.wait_for(self, timeout)
        except KeyboardInterrupt:
            _interrupted(self._driver)
            raise

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The task's return value; re-raises the task's exception if it failed.

        Raises:
            TaskTimeout: the run did not finish within ``timeout`` seconds (it keeps running).
            Exception: the exception the task raised, same type and message, with the remote
                traceback attached as a note.
        """
        self.wait(timeout)
        if not self.done():
            raise TaskTimeout(f"task {self.task_name!r} (run {self.task_run_id}) did not finish "
                              f"within {timeout} s; it is still {self.state.value}")
        self.observed = True
        if self._final_state is not None and self._final_state.is_success:
            if self._value is _MISSING:
                self._value = self._driver.load_result(self.task_run_id, self._payload)
                self._payload = None
            return self._value  # type: ignore[no-any-return]
        exc = self._build_exception()
        if raise_on_failure:
            raise exc
        return exc  # type: ignore[return-value]

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The exception the run failed with, or None when it succeeded."""
        self.wait(timeout)
        self.observed = True
        if self._final_state is None or self._final_state.is_success:
            return None
        return self._build_exception()

    def _build_exception(self) -> BaseException:
        error = self._error or {}
        exc_type = str(error.get("error_type", ""))
        message = str(error.get("error_message", ""))
        remote_tb = str(error.get("traceback", ""))
        attempts = int(str(error.get("attempt", 0)) or 0)
        if self._final_state is RunState.CANCELLED:
            return CancelledRun(f"task {self.task_name!r} (run {self.task_run_id}) was cancelled")
        if exc_type == "flowkit.errors.UpstreamFailed":
            return UpstreamFailed(message)
        rebuilt = self._driver.load_exception(error.get("exception", b""))
        rebuilt_type = type(rebuilt)
        if rebuilt is None or f"{rebuilt_type.__module__}.{rebuilt_type.__qualname__}" != exc_type:
            rebuilt = _known_exception(exc_type, message)
        if rebuilt is None:
            rebuilt = TaskFailed(f"task {self.task_name!r} failed with {exc_type}: {message}",
                                 exc_type=exc_type, remote_traceback=remote_tb, attempts=attempts)
        if remote_tb and hasattr(rebuilt, "add_note") and not getattr(
                rebuilt, "remote_traceback_noted", False):
            rebuilt.add_note(f"Remote traceback (task {self.task_name!r}, run "
                             f"{self.task_run_id}):\n{remote_tb.rstrip()}")
        rebuilt.remote_traceback = remote_tb  # type: ignore[attr-defined]
        rebuilt.remote_traceback_noted = True  # type: ignore[attr-defined]
        return rebuilt


def _interrupted(driver: Driver) -> None:
    from flowkit.context import flow_run_ctx

    if flow_run_ctx.get() is None:
        from flowkit._interrupts import cancel_after_interrupt

        cancel_after_interrupt(driver)


def _known_exception(exc_type: str, message: str) -> BaseException | None:
    """Rebuild a builtin or flowkit exception from its name when its pickle is unusable
    (e.g. sealed with another key): these types are known here, nothing is unpickled."""
    import builtins

    from flowkit import errors

    module, _, name = exc_type.rpartition(".")
    home = {"builtins": builtins, "flowkit.errors": errors}.get(module)
    cls = getattr(home, name, None) if home is not None else None
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(message)
        except Exception:
            return None
    return None


class DoneAndNotDone(NamedTuple):
    """What :func:`wait` returns, as in ``concurrent.futures``."""

    done: set[TaskFuture[Any]]
    not_done: set[TaskFuture[Any]]


def wait(futures: Iterable[TaskFuture[Any]], timeout: float | None = None) -> DoneAndNotDone:
    """Wait until every future is done or ``timeout`` seconds pass."""
    futures = list(futures)
    deadline = None if timeout is None else time.monotonic() + timeout
    for future in futures:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        future.wait(remaining)
    done = {f for f in futures if f.done()}
    return DoneAndNotDone(done, set(futures) - done)


def as_completed(futures: Iterable[TaskFuture[Any]],
                 timeout: float | None = None) -> Iterator[TaskFuture[Any]]:
    """Yield futures as they finish, first finished first.

    Raises:
        TaskTimeout: some futures were still running after ``timeout`` seconds.
    """
    futures = list(futures)
    finished: list[TaskFuture[Any]] = []
    ready = threading.Condition()

    def on_done(future: TaskFuture[Any]) -> None:
        with ready:
            finished.append(future)
            ready.notify()

    for future in futures:
        future.add_done_callback(on_done)
    deadline = None if timeout is None else time.monotonic() + timeout
    yielded = 0
    while yielded < len(futures):
        try:
            batch = _next_finished(futures, finished, yielded, ready, deadline, timeout)
        except KeyboardInterrupt:
            _interrupted(futures[0]._driver)
            raise
        for future in batch:
            yielded += 1
            yield future


def _next_finished(futures: list[TaskFuture[Any]], finished: list[TaskFuture[Any]],
                   yielded: int, ready: threading.Condition, deadline: float | None,
                   timeout: float | None) -> list[TaskFuture[Any]]:
    """Wait until a future beyond the ``yielded`` first has finished; return those. While it
    waits, the listener checks on workers and lost state; here only the clock is read (a
    partition past the driver's tolerance fails the futures)."""
    driver = futures[0]._driver  # (as_completed only waits while some future is unyielded)
    with ready, driver.waiting():
        while len(finished) <= yielded:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TaskTimeout(f"{len(futures) - yielded} of {len(futures)} futures "
                                  f"unfinished after {timeout} s")
            ready.wait(0.5 if remaining is None else min(remaining, 0.5))
            driver.judge_silence()
        return finished[yielded:]
