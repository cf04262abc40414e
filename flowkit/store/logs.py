"""Run logs: one capped stream per flow run (plain writes: no run state).

Writing one line costs a round trip (about 0.5 ms), which a task printing in a loop pays per
line; :class:`LogBuffer` collects lines in memory and writes them in batches instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowkit._rate import FORWARD_LINES_PER_SECOND, TokenBucket
from flowkit.errors import StoreError
from flowkit.store import keys
from flowkit.store._codec import decode
from flowkit.store.connection import call
from flowkit.store.limits import LOGS_MAXLEN, REPLY_MAXLEN

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: Lines a buffer holds before the writer of the next line writes them all itself.
BUFFER_MAX_LINES = 2000
#: Seconds a buffered line waits at most before the buffer's thread writes it.
FLUSH_SECONDS = 0.05
#: Lines kept while Redis cannot be reached; past this the oldest are dropped.
BUFFER_HARD_LIMIT = 20 * BUFFER_MAX_LINES

#: One buffered line: flow run id, the driver's reply stream ("" for none), the fields. A line
#: without a flow run id goes to the reply stream only (a count of lines not forwarded).
Line = tuple[str, str, dict[str, str]]


def append_log(client: redis.Redis | Any, flow_run_id: str, record: dict[Any, Any],
               reply_to: str = "") -> None:
    """Add one log line to the flow run's log stream (and to the driver's reply stream)."""
    pipe = client.pipeline(transaction=False)
    add_lines(pipe, [(flow_run_id, reply_to, record)])
    call(client, pipe.execute)


def add_lines(pipe: Any, lines: list[Line]) -> None:
    """Queue the writes of ``lines`` on a pipeline, in order."""
    for flow_run_id, reply_to, record in lines:
        if not flow_run_id:
            pipe.xadd(reply_to, record, maxlen=REPLY_MAXLEN, approximate=True)
            continue
        pipe.xadd(keys.logs(flow_run_id), record, maxlen=LOGS_MAXLEN, approximate=True)
        if reply_to:
            pipe.xadd(reply_to, {"kind": "log", "flow_run_id": flow_run_id, **record},
                      maxlen=REPLY_MAXLEN, approximate=True)


class LogBuffer:
    """Log lines of one process on their way to Redis, written in batches.

    A line waits at most ``flush_seconds`` (a daemon thread writes what is pending), or until
    ``max_lines`` are pending (the caller adding the next line writes them). Writers take
    ``_write_lock`` for the whole round trip, so lines reach Redis in the order they were
    added whichever thread writes them; :meth:`writing` lets the executor put the pending
    lines into the pipeline that records outcomes, so a run's logs are stored before its
    outcome, in the same round trip.
    """

    def __init__(self, client: redis.Redis | Any, max_lines: int = BUFFER_MAX_LINES,
                 flush_seconds: float = FLUSH_SECONDS, forward: TokenBucket | None = None
                 ) -> None:
        self.client = client
        self.forward = forward or TokenBucket(FORWARD_LINES_PER_SECOND)
        self._not_forwarded: dict[tuple[str, str], int] = {}
        self.max_lines = max_lines
        self.flush_seconds = flush_seconds
        self._pending: list[Line] = []
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def add(self, flow_run_id: str, reply_to: str, record: dict[str, str]) -> None:
        """Buffer one line (microseconds); write the batch now if it is full."""
        with self._lock:
            if reply_to and not self.forward.take():
                where = (flow_run_id, reply_to)
                self._not_forwarded[where] = self._not_forwarded.get(where, 0) + 1
                reply_to = ""
            self._pending.append((flow_run_id, reply_to, record))
            full = len(self._pending) >= self.max_lines
        if self._thread is None or self._pid != os.getpid():
            self._start()
        if full:
            self.flush()

    def flush(self) -> int:
        """Write what is pending now; the number of lines written. A failure to reach Redis
        keeps the lines (up to BUFFER_HARD_LIMIT) for the next flush."""
        with self._write_lock:
            lines = self._take()
            if not lines:
                return 0
            try:
                pipe = self.client.pipeline(transaction=False)
                add_lines(pipe, lines)
                call(self.client, pipe.execute)
            except Exception as exc:
                self._put_back(lines)
                logger.warning("writing %d log lines failed (%s); kept for the next try",
                               len(lines), exc)
                return 0
            return len(lines)

    @contextlib.contextmanager
    def writing(self) -> Iterator[list[Line]]:
        """The pending lines, taken out of the buffer, with the write lock held: the caller
        writes them (see :func:`add_lines`) before anything added later can be."""
        with self._write_lock:
            yield self._take()

    def close(self) -> None:
        """Write what is pending and stop the thread."""
        self._stop.set()
        self.flush()

    def _take(self) -> list[Line]:
        with self._lock:
            lines, self._pending = self._pending, []
            counts, self._not_forwarded = self._not_forwarded, {}
        return lines + [("", reply_to, {"kind": "log_skipped", "flow_run_id": flow_run_id,
                                        "count": str(count)})
                        for (flow_run_id, reply_to), count in counts.items()]

    def _put_back(self, lines: list[Line]) -> None:
        with self._lock:
            self._pending = (lines + self._pending)[-BUFFER_HARD_LIMIT:]

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None and self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="flowkit-logs", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            if self._pending:
                self.flush()


@dataclass(frozen=True)
class LogCounts:
    """How many lines a run's log stream was given, and how many it still holds."""

    written: int
    kept: int

    @property
    def dropped(self) -> int:
        """Lines trimmed away by the stream's cap (LOGS_MAXLEN)."""
        return max(self.written - self.kept, 0)


def log_counts(client: redis.Redis, flow_run_id: str) -> LogCounts:
    """Written and kept lines of a flow run's log stream. The server counts every entry ever
    added to a stream (XINFO STREAM's entries-added), so no counter of our own is written."""
    try:
        info = call(client, client.xinfo_stream, keys.logs(flow_run_id))
    except StoreError as exc:
        if "no such key" in str(exc).lower():  # no stream: the run never logged
            return LogCounts(0, 0)
        raise
    kept = int(info.get("length", 0))
    return LogCounts(int(info.get("entries-added", kept)), kept)


def read_logs(client: redis.Redis, flow_run_id: str, after: str = "-",
              count: int = 10_000) -> list[tuple[str, dict[str, str]]]:
    """Log lines of a flow run after stream id ``after`` (exclusive), oldest first."""
    start = after if after == "-" else f"({after}"
    entries = call(client, client.xrange, keys.logs(flow_run_id), start, "+", count)
    return [(entry_id.decode(), decode(fields)) for entry_id, fields in entries]


def iter_logs(client: redis.Redis, flow_run_id: str, after: str = "-", page: int = 10_000
              ) -> Iterator[list[tuple[str, dict[str, str]]]]:
    """Every log line of a flow run after ``after``, in pages of ``page`` lines."""
    while True:
        entries = read_logs(client, flow_run_id, after=after, count=page)
        if entries:
            yield entries
        if len(entries) < page:
            return
        after = entries[-1][0]


def tail_logs(client: redis.Redis, flow_run_id: str, count: int = 200
              ) -> list[tuple[str, dict[str, str]]]:
    """The last ``count`` log lines of a flow run, oldest first."""
    entries = call(client, client.xrevrange, keys.logs(flow_run_id), "+", "-", count)
    return [(entry_id.decode(), decode(fields)) for entry_id, fields in reversed(entries)]
