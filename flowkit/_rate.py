"""Rate limits of log echo (pure: no I/O; the clock is passed in, so tests use a fake one).

A chatty task can print a million lines; its driver (a terminal, a notebook) should show a
readable trickle and say how much it left out, and the copies an executor sends to the
driver's reply stream should not crowd out the completion messages in the same stream.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable

#: Log lines per second a driver echoes, and how many it echoes in one burst.
ECHO_LINES_PER_SECOND = 200.0
#: Log lines per second an executor copies to drivers' reply streams (the rest are counted).
FORWARD_LINES_PER_SECOND = 2 * ECHO_LINES_PER_SECOND
#: Seconds between two "not echoed" summaries while lines keep being left out.
SUMMARY_SECONDS = 2.0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; :meth:`take` spends one."""

    def __init__(self, rate: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = rate if burst is None else burst
        self.clock = clock
        self._tokens = self.burst
        self._at = clock()

    def take(self) -> bool:
        """Spend a token if there is one; False when the rate is exceeded."""
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class EchoGate:
    """Decides which log lines a driver echoes, and when it says how many it left out.

    Lines past the bucket's rate are counted per flow run; a summary per flow run is due with
    the next line echoed at least ``summary_seconds`` after the last summary, or when the
    caller drains the gate (a task run ended). Safe to share between threads (a driver's
    listener and its flow threads echo).
    """

    def __init__(self, bucket: TokenBucket, summary_seconds: float = SUMMARY_SECONDS) -> None:
        self.bucket = bucket
        self.summary_seconds = summary_seconds
        self._left_out: dict[str, int] = {}
        self._last_summary = bucket.clock() - summary_seconds
        self._lock = threading.Lock()

    def admit(self, flow_run_id: str) -> tuple[bool, list[tuple[str, int]]]:
        """Whether to echo this line, and the summaries ``(flow run, lines left out)`` to
        print before it."""
        with self._lock:
            if not self.bucket.take():
                self._count(flow_run_id, 1)
                return False, []
            if self._left_out and (self.bucket.clock() - self._last_summary
                                   >= self.summary_seconds):
                return True, self._drain()
            return True, []

    def left_out(self, flow_run_id: str, count: int) -> None:
        """Count lines that were not echoed (here, or already by the executor)."""
        with self._lock:
            self._count(flow_run_id, count)

    def drain(self) -> list[tuple[str, int]]:
        """The summaries due now, forgetting them."""
        with self._lock:
            return self._drain()

    def _count(self, flow_run_id: str, count: int) -> None:
        if count > 0:
            self._left_out[flow_run_id] = self._left_out.get(flow_run_id, 0) + count

    def _drain(self) -> list[tuple[str, int]]:
        due, self._left_out = list(self._left_out.items()), {}
        if due:
            self._last_summary = self.bucket.clock()
        return due


def summary_line(flow_run_id: str, count: int) -> str:
    """What a driver prints for lines it did not echo."""
    return (f"flowkit: {count} log lines not echoed; see `flowkit run logs {flow_run_id}`")


class LogEcho:
    """Echoes run log lines to the driver's stderr, at most ECHO_LINES_PER_SECOND."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.gate = enabled, EchoGate(TokenBucket(ECHO_LINES_PER_SECOND))

    def echo(self, record: dict[str, str]) -> None:
        """Print one run log line to this driver's stderr, at most ECHO_LINES_PER_SECOND (a
        chatty task must not flood a notebook); lines left out are counted and summed up in
        one line that says where to read them all."""
        if not self.enabled:
            return
        flow_run_id = record.get("flow_run_id", "")
        if record.get("kind") == "log_skipped":  # lines the executor did not forward
            self.gate.left_out(flow_run_id, int(record.get("count") or 0))
            return
        admitted, summaries = self.gate.admit(flow_run_id)
        self.summaries(summaries)
        if not admitted:
            return
        ts = float(record.get("ts", time.time()))
        stamp = time.strftime("%H:%M:%S", time.localtime(ts)) + f".{int(ts % 1 * 1000):03d}"
        who = record.get("name", "")
        if record.get("task_run_id"):
            who = f"{who}-{record['task_run_id'][:6]}"
        sys.stderr.write(f"{stamp} | {record.get('level', 'INFO'):<7} | {who} - "
                         f"{record.get('message', '')}\n")

    def summaries(self, summaries: list[tuple[str, int]] | None = None) -> None:
        """Print the "not echoed" lines due (by default: all of them, e.g. as a run ends)."""
        for flow_run_id, count in self.gate.drain() if summaries is None else summaries:
            sys.stderr.write(summary_line(flow_run_id or "<id>", count) + "\n")
