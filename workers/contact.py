"""Whether a process can reach Redis, logged as state changes instead of one line per failure.

A worker cut off from Redis used to print a warning from every duty four times a second.
:class:`Contact` turns the stream of successes and failures into three kinds of lines: one
when contact is lost, one when it is back (with how long it was gone), and a rare reminder in
between. It also tells the supervisor how long it has gone without renewing its leases.
:class:`RestartBackoff` spaces out the restarts of executors that keep dying at once.
Both are pure (an injected clock), so they are unit-tested without processes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds between "still unreachable" reminders while contact stays lost.
REMINDER_SECONDS = 60.0


class Contact:
    """Tracks contact with Redis for one process and logs only its changes."""

    def __init__(self, who: str, log: logging.Logger,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.who, self.log, self.clock = who, log, clock
        self.last_ok = clock()
        self.lost_since: float | None = None
        self._reminded = 0.0

    @property
    def is_lost(self) -> bool:
        """True from the first failure until the next success."""
        return self.lost_since is not None

    def ok(self) -> None:
        """A call to Redis succeeded."""
        now = self.clock()
        if self.lost_since is not None:
            self.log.warning("%s: contact with Redis is back after %.1fs", self.who,
                             now - self.lost_since)
            self.lost_since = None
        self.last_ok = now

    def failed(self, error: BaseException) -> None:
        """A call to Redis failed to connect or timed out (after the client's own retries)."""
        now = self.clock()
        if self.lost_since is None:
            self.lost_since = self._reminded = now
            self.log.warning("%s: lost contact with Redis: %s", self.who, error)
        elif now - self._reminded >= REMINDER_SECONDS:
            self._reminded = now
            self.log.warning("%s: Redis still unreachable after %.0fs", self.who,
                             now - self.lost_since)

    def silent_for(self) -> float:
        """Seconds since the last successful call."""
        return self.clock() - self.last_ok


class RestartBackoff:
    """Delay before restarting an executor: none after a healthy run, doubling (capped) while
    executors keep dying soon after they start (Redis away, a broken environment)."""

    def __init__(self, first: float = 0.1, cap: float = 30.0, healthy_after: float = 10.0) -> None:
        self.first, self.cap, self.healthy_after = first, cap, healthy_after
        self.quick_deaths = 0

    def delay(self, lived: float) -> float:
        """Seconds to wait before the next start, given how long the last process lived."""
        if lived >= self.healthy_after:
            self.quick_deaths = 0
            return 0.0
        self.quick_deaths += 1
        return float(min(self.cap, self.first * 2 ** (self.quick_deaths - 1)))
