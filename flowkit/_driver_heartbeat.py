"""The driver's heartbeat thread: keeps its open flow runs from being ended as "driver lost".

It beats every few seconds (at most a quarter of the partition tolerance) and at once when a
flow run is attached, so a driver killed right after starting a flow is still found. A beat
that fails (Redis away) is simply tried again: the runs stay safe until the tolerance runs
out. The thread also runs small deferred writes off the caller's path (closing a submit's
ad-hoc run), so that a top-level ``submit`` costs one extra round trip, not two.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from flowkit.store import drivers

if TYPE_CHECKING:
    import redis

    from flowkit.store.limits import Limits

#: Longest pause between two beats.
MAX_BEAT_SECONDS = 5.0


class DriverHeartbeat:
    """Beats for one driver from a daemon thread, started with the first attached run."""

    def __init__(self, client: redis.Redis, limits: Limits, driver_id: str,
                 tolerance: float) -> None:
        self.client, self.limits, self.driver_id = client, limits, driver_id
        self.tolerance = tolerance
        self.period = min(MAX_BEAT_SECONDS, tolerance / 4)
        self.label = f"host {socket.gethostname()} pid {os.getpid()}"
        self._runs: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._urgent = False
        self._later: deque[Callable[[], None]] = deque()

    def attach(self, flow_run_id: str, urgent: bool = True) -> None:
        """Cover a flow run from now until it ends or is detached; ``urgent``: beat now (a
        flow, a cell), else at the next period (a submit's own run, closed in a moment)."""
        with self._lock:
            self._runs.add(flow_run_id)
            self._urgent = self._urgent or urgent
            self._start()
        if urgent:
            self._wake.set()

    def run_soon(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the heartbeat thread (in order, errors ignored: best effort)."""
        with self._lock:
            self._later.append(job)
            self._start()
        self._wake.set()

    def _start(self) -> None:
        if self._thread is None and not self._stopped.is_set():
            self._thread = threading.Thread(target=self._loop, daemon=True,
                                            name="flowkit-driver-heartbeat")
            self._thread.start()

    def detach(self, flow_run_id: str) -> None:
        """Stop covering a run that ends by itself now (a closed ad-hoc run)."""
        with self._lock:
            self._runs.discard(flow_run_id)

    def beat_once(self) -> None:
        with self._lock:
            runs = sorted(self._runs)
        ended = drivers.beat(self.client, self.limits, self.driver_id, self.label,
                             self.tolerance, runs)
        with self._lock:
            self._runs -= ended

    def _run_later(self) -> None:
        while self._later:
            try:
                self._later.popleft()()
            except Exception:  # best effort: the driver's exit closes what is left
                pass

    def _loop(self) -> None:
        next_beat = 0.0
        while not self._stopped.is_set():
            self._wake.wait(max(0.0, next_beat - time.monotonic()))
            self._wake.clear()
            self._run_later()
            with self._lock:
                due, self._urgent = self._urgent or time.monotonic() >= next_beat, False
            if not due or self._stopped.is_set():
                continue
            try:
                self.beat_once()
            except Exception:  # Redis away: the next beat tries again, within the tolerance
                pass
            next_beat = time.monotonic() + self.period

    def stop(self) -> None:
        """A clean exit: stop beating and drop the heartbeat (the runs were left properly)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._run_later()
            drivers.forget(self.client, self.limits, self.driver_id, only_if_lost=False)
