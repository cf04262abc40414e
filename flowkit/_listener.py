"""The driver's reply listener: one thread blocked on its reply stream (no polling).

Workers and the library write completions, log lines and flow cancellations to the stream
of the driver that submitted the work; the listener hands each entry to a callback and
trims what it has read. Between reads it runs the driver's periodic checks (lost state,
live workers), so that no waiting caller blocks on Redis itself.

It never gives up: when Redis cannot be reached it backs off (at most a couple of seconds
between tries) and resumes reading after the last entry it handled once Redis is back.
How long a driver tolerates that silence is the waiter's judgement: :meth:`silent_for` says
for how long the listener has not heard from Redis. The bound is time, not a count of failed
reads as it once was: how long thirty failures took depended on timeouts and backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: Entries read per XREAD, and how long one blocks (ms) before checking for shutdown.
READ_COUNT, BLOCK_MS = 2000, 1000
#: A listener quiet for longer than one blocking read and this many seconds is cut off.
QUIET_GRACE_SECONDS = 1.5
#: The stream is trimmed of what was read after this many entries or seconds...
TRIM_EVERY, TRIM_SECONDS = 1000, 1.0
#: ...or at once, past this many entries, when the driver waits for nothing more (a driver
#: that waits on one call at a time would otherwise trim after every reply).
SETTLED_TRIM_ENTRIES = 64
#: Longest pause between two tries to reach an unreachable Redis.
MAX_BACKOFF_SECONDS = 2.0


class ReplyListener:
    """Reads one reply stream in a daemon thread and calls ``handle(fields)`` per entry, and
    ``periodic()`` at most every ``period`` seconds while Redis answers. ``settled()`` says
    whether its driver waits for nothing more: then what was read is trimmed at once."""

    def __init__(self, client: redis.Redis, stream: str,
                 handle: Callable[[dict[bytes, bytes]], None],
                 periodic: Callable[[], None] | None = None, period: float = 1.0,
                 settled: Callable[[], bool] | None = None) -> None:
        self.client, self.stream, self.handle = client, stream, handle
        self.periodic, self.period, self.settled = periodic, period, settled
        self._stopping = False
        self._last_ok = time.monotonic()
        self._untrimmed, self._trimmed_at = 0, 0.0
        self._thread = threading.Thread(target=self._run, name="flowkit-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True

    def is_alive(self) -> bool:
        """False once the listener stopped (closed, or a bug killed its thread)."""
        return self._thread.is_alive()

    def silent_for(self) -> float:
        """Seconds since Redis should have answered (a blocking read returns within BLOCK_MS
        even when there is nothing to read), once that is longer than QUIET_GRACE_SECONDS
        (0.0 while connected). Counted from the end of the read's block, not from its start:
        a partition that began mid-read began after it was sent, so the driver never judges
        a silence longer than the one it lived through."""
        quiet = time.monotonic() - self._last_ok - BLOCK_MS / 1000
        return quiet if quiet > QUIET_GRACE_SECONDS else 0.0

    def _run(self) -> None:
        last, failures, next_check = "0-0", 0, 0.0
        while not self._stopping:
            try:
                reply: Any = self.client.xread({self.stream: last}, count=READ_COUNT,
                                               block=BLOCK_MS)
            except Exception as exc:  # connection trouble: back off and try again
                failures += 1
                self._on_failure(exc, failures)
                continue
            if failures:
                logger.warning("flowkit: Redis answers again after %.1f s; reading replies "
                               "from where the listener left off",
                               time.monotonic() - self._last_ok)
                failures = 0
            self._last_ok = time.monotonic()
            if reply:
                last = self._take(reply[0][1])
            elif self._untrimmed:  # quiet now: what was read need not wait for more
                self._trim(last)
            if self.periodic is not None and self._last_ok >= next_check:
                next_check = self._last_ok + self.period
                self._run_periodic()

    def _take(self, entries: list[Any]) -> str:
        for _, fields in entries:
            self._dispatch(fields)
        last: str = entries[-1][0].decode()
        self._untrimmed += len(entries)
        now = time.monotonic()
        # Trimming is housekeeping: once per TRIM_EVERY entries or TRIM_SECONDS, not after
        # every read (a round trip each: under a stream of small replies, half the driver's),
        # and when the driver waits for nothing more (or the stream goes quiet): the replies
        # of a finished map must not stay in Redis, megabytes of them, until the next one.
        if (self._untrimmed >= TRIM_EVERY or now - self._trimmed_at >= TRIM_SECONDS
                or (self._untrimmed >= SETTLED_TRIM_ENTRIES and self.settled is not None
                    and self.settled())):
            self._trim(last)
        return last

    def _trim(self, last: str) -> None:
        """Drop what was read, up to ``last`` (whole stream nodes: approximate)."""
        try:
            self.client.xtrim(self.stream, minid=last, approximate=True)
            self._untrimmed, self._trimmed_at = 0, time.monotonic()
        except Exception:  # the next read trims further
            pass

    def _on_failure(self, exc: Exception, failures: int) -> None:
        if self._stopping:
            return
        if failures == 1:
            logger.warning("flowkit: reply listener cannot reach Redis (%s); retrying", exc)
        time.sleep(min(0.1 * 2 ** failures, MAX_BACKOFF_SECONDS))

    def _run_periodic(self) -> None:
        assert self.periodic is not None
        try:
            self.periodic()
            self._last_ok = time.monotonic()
        except Exception as exc:  # Redis away for a moment: the next period checks again
            logger.debug("flowkit: periodic driver check failed: %s", exc)

    def _dispatch(self, fields: dict[bytes, bytes]) -> None:
        try:
            self.handle(fields)
        except Exception:  # one bad entry must not stop every future's completion
            logger.exception("flowkit: could not handle a reply")
