"""Where task calls made outside any flow are recorded: ad-hoc flow runs.

In IPython (a notebook, the REPL) each cell gets one ad-hoc run, opened by the cell's first
submit and closed when the cell ends; elsewhere each top-level ``submit``/``map`` call gets
its own. A closed run ends by itself when its last task run ends, so no run stays open for the
life of a process. The record is written only once a call's arguments are ready to travel,
and one that a failed submit left empty is removed again.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from flowkit._ids import new_id
from flowkit.store import drivers, flow_runs
from flowkit.store.task_runs import AdhocRecord

if TYPE_CHECKING:
    from flowkit.driver import Driver


class AdhocRuns:
    """The ad-hoc runs of one driver: per cell in IPython, else per call."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self._lock = threading.Lock()
        self._created: set[str] = set()
        self._holding: set[str] = set()
        self._cell_run: str | None = None
        self._hooked = False
        self.in_cells = False

    # -- one call --------------------------------------------------------------------------
    def run_for_call(self) -> str:
        """The ad-hoc run id of the call about to submit (not yet recorded)."""
        self._hook_ipython()
        with self._lock:
            if not self.in_cells:
                return new_id()
            if self._cell_run is None:
                self._cell_run = new_id()
            return self._cell_run

    def record(self, flow_run_id: str) -> AdhocRecord | None:
        """What the call's enqueue records with its task runs (None: the run exists, a cell's
        earlier call wrote it): the record costs no round trip of its own."""
        with self._lock:
            if flow_run_id in self._created:
                return None
            self._created.add(flow_run_id)
            name = _cell_name() if self.in_cells else _script_name()
        self.driver.heartbeat.attach(flow_run_id, urgent=self.in_cells)
        return AdhocRecord(f"adhoc: {name}", close=not self.in_cells)

    def failed(self, flow_run_id: str) -> None:
        """A submit failed: remove its run if it holds no task run (best effort)."""
        with self._lock:
            if flow_run_id not in self._created:
                return
        try:
            if drivers.discard_empty_adhoc(self.driver.client, self.driver.limits, flow_run_id):
                with self._lock:
                    self._created.discard(flow_run_id)
        except Exception:  # Redis away: the run stays, and closes when the driver leaves
            pass

    def call_ended(self, flow_run_id: str, closed: bool = False) -> None:
        """A submit/map call returned: outside cells its run closes now (on the heartbeat
        thread: the caller does not wait for it), unless its one enqueue ``closed`` it."""
        if self.in_cells:
            return
        if closed:
            with self._lock:
                self._created.discard(flow_run_id)
            self._detach_unless_held(flow_run_id)
            return
        self.driver.heartbeat.run_soon(lambda: self._close(flow_run_id))

    # -- cells -----------------------------------------------------------------------------
    def _hook_ipython(self) -> None:
        if self._hooked:
            return
        self._hooked = True
        shell = _ipython()
        if shell is None:
            return
        self.in_cells = True
        shell.events.register("pre_run_cell", self._cell_started)
        shell.events.register("post_run_cell", self._cell_ended)

    def _cell_started(self, info: Any = None) -> None:
        with self._lock:
            self._cell_run = None

    def _cell_ended(self, result: Any = None) -> None:
        with self._lock:
            run, self._cell_run = self._cell_run, None
        if run is None:
            return
        if isinstance(getattr(result, "error_in_exec", None), KeyboardInterrupt):
            from flowkit._interrupts import cancel_after_interrupt

            cancel_after_interrupt(self.driver, {run})
        self._close(run)

    def current_cell_run(self) -> str | None:
        return self._cell_run

    def _close(self, flow_run_id: str) -> None:
        with self._lock:
            if flow_run_id not in self._created:
                return
            self._created.discard(flow_run_id)
        try:
            flow_runs.close_flow_run(self.driver.client, self.driver.limits, flow_run_id)
        except Exception:  # Redis away: the heartbeat ends it as "driver lost" if we never return
            return
        self._detach_unless_held(flow_run_id)  # closed: it ends when its task runs end

    def note_held(self, flow_run_id: str) -> None:
        """The run holds task runs that wait on upstream futures: only this driver releases
        them, so the heartbeat keeps covering the run until it ends (a killed driver's run
        then ends CRASHED instead of waiting forever)."""
        with self._lock:
            self._holding.add(flow_run_id)

    def _detach_unless_held(self, flow_run_id: str) -> None:
        with self._lock:
            if flow_run_id in self._holding:
                return  # the beat drops it once it has ended
        self.driver.heartbeat.detach(flow_run_id)

    def forget_all(self) -> None:
        """Redis lost everything: the runs recorded so far are gone, the next call records its
        run again (a cell's too)."""
        with self._lock:
            self._created.clear()

    def close_all(self) -> None:
        """The driver leaves: every run still open closes (ends when its task runs end)."""
        with self._lock:
            runs = list(self._created)
        for run in runs:
            self._close(run)


def _script_name() -> str:
    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "interactive"


def _cell_name() -> str:
    """The running cell's number as the notebook shows it (IPython counts it before it runs)."""
    shell = _ipython()
    return f"cell {shell.execution_count - 1}" if shell is not None else "cell"


def _ipython() -> Any:
    """The running IPython shell, or None (IPython is not imported for this)."""
    module = sys.modules.get("IPython")
    if module is None:
        return None
    try:
        return module.get_ipython()
    except Exception:
        return None
