"""The driver's heartbeat thread: keeps its open flow runs from being ended as "driver lost".

It beats every few seconds (at most a quarter of the partition tolerance) and at once when a
run is attached, so a driver killed right after starting a flow is still found. A beat that
fails (Redis away) is simply tried again: the runs stay safe until the tolerance runs out.
"""

from __future__ import annotations

import os
import socket
import threading
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

    def attach(self, flow_run_id: str, urgent: bool = True) -> None:
        """Cover a flow run from now until it ends or is detached; ``urgent``: beat now (a
        flow, a cell), else at the next period (a submit's own run, closed in a moment)."""
        with self._lock:
            self._runs.add(flow_run_id)
            if self._thread is None and not self._stopped.is_set():
                self._thread = threading.Thread(target=self._loop, daemon=True,
                                                name="flowkit-driver-heartbeat")
                self._thread.start()
        if urgent:
            self._wake.set()

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

    def _loop(self) -> None:
        while not self._stopped.is_set():
            self._wake.clear()
            try:
                self.beat_once()
            except Exception:  # Redis away: the next beat tries again, within the tolerance
                pass
            self._wake.wait(self.period)

    def stop(self) -> None:
        """A clean exit: stop beating and drop the heartbeat (the runs were left properly)."""
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            drivers.forget(self.client, self.limits, self.driver_id, only_if_lost=False)
