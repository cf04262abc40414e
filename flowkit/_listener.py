"""The driver's reply listener: one thread blocked on its reply stream (no polling).

Workers and the library write completions, log lines and flow cancellations to the stream
of the driver that submitted the work; the listener hands each entry to a callback and
trims what it has read.
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
#: Consecutive read failures (with backoff, about a minute) before the listener gives up.
MAX_FAILURES = 30


class ReplyListener:
    """Reads one reply stream in a daemon thread and calls ``handle(fields)`` per entry."""

    def __init__(self, client: redis.Redis, stream: str,
                 handle: Callable[[dict[bytes, bytes]], None]) -> None:
        self.client, self.stream, self.handle = client, stream, handle
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="flowkit-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True

    def is_alive(self) -> bool:
        """False once the listener gave up (Redis unreachable for about a minute)."""
        return self._thread.is_alive()

    def _run(self) -> None:
        last, failures = "0-0", 0
        while not self._stopping:
            try:
                reply: Any = self.client.xread({self.stream: last}, count=READ_COUNT,
                                               block=BLOCK_MS)
                failures = 0
            except Exception as exc:  # connection trouble: back off, bounded, then give up
                failures += 1
                if self._stopping or failures > MAX_FAILURES:
                    logger.error("flowkit: reply listener stopped: %s", exc)
                    return
                time.sleep(min(0.1 * 2 ** failures, 2.0))
                continue
            if not reply:
                continue
            entries = reply[0][1]
            for _, fields in entries:
                self._dispatch(fields)
            last = entries[-1][0].decode()
            try:
                self.client.xtrim(self.stream, minid=last, approximate=True)
            except Exception:  # trimming is housekeeping: the next read trims further
                pass

    def _dispatch(self, fields: dict[bytes, bytes]) -> None:
        try:
            self.handle(fields)
        except Exception:  # one bad entry must not stop every future's completion
            logger.exception("flowkit: could not handle a reply")
