"""Run states and the rules for moving between them (pure: no Redis here).

This table is the one source of the state machine: the store's Lua library is generated from
it (``flowkit.store.functions``) and checks every transition it writes against it, and the
dashboard takes state names and colours from here.
"""

from __future__ import annotations

from enum import Enum


class RunState(str, Enum):
    """The state of a flow run or task run, stored in Redis by its lowercase value."""

    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    CACHED = "cached"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CRASHED = "crashed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        """The stored value ("completed"), as in templates and messages (like StrEnum)."""
        return self.value

    @property
    def is_terminal(self) -> bool:
        """True when no further transition is allowed (except a user's retry)."""
        return self in TERMINAL_STATES

    @property
    def is_success(self) -> bool:
        """True when the run produced a result."""
        return self in (RunState.COMPLETED, RunState.CACHED)


#: States after which a run never changes again on its own (a user's retry reopens it).
TERMINAL_STATES = frozenset({RunState.COMPLETED, RunState.CACHED, RunState.FAILED,
                             RunState.TIMED_OUT, RunState.CRASHED, RunState.CANCELLED})

#: Terminal states that count as a failure of the run that contains them.
FAILURE_STATES = frozenset({RunState.FAILED, RunState.TIMED_OUT, RunState.CRASHED})

#: States whose work is still to come: a flow run with task runs in them is not finished.
ACTIVE_STATES = frozenset({RunState.PENDING, RunState.SCHEDULED, RunState.RUNNING,
                           RunState.RETRYING})

#: Task run states that "retry failed tasks" (dashboard, CLI) sends back to the queue.
RETRYABLE_STATES = FAILURE_STATES

#: Every state, in the order listings and counters show them.
ALL_STATES: tuple[RunState, ...] = tuple(RunState)

#: Where a run may go from each state. ``None`` is "does not exist yet": what a run may be
#: created in (a cache hit is created CACHED). RUNNING -> PENDING is a claim given back
#: before its executor started it (release, or the reaper after a whole worker died).
ALLOWED: dict[RunState | None, frozenset[RunState]] = {
    None: frozenset({RunState.PENDING, RunState.SCHEDULED, RunState.RUNNING, RunState.CACHED}),
    RunState.PENDING: frozenset({RunState.SCHEDULED, RunState.RUNNING, RunState.CACHED,
                                 RunState.FAILED, RunState.CANCELLED, RunState.CRASHED}),
    RunState.SCHEDULED: frozenset({RunState.PENDING, RunState.RUNNING, RunState.CANCELLED,
                                   RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.PENDING, RunState.COMPLETED, RunState.CACHED,
                                 RunState.FAILED, RunState.TIMED_OUT, RunState.CRASHED,
                                 RunState.CANCELLED, RunState.RETRYING}),
    RunState.RETRYING: frozenset({RunState.PENDING, RunState.RUNNING, RunState.CANCELLED,
                                  RunState.FAILED}),
}

#: Where a user's retry may send a terminal run: a task run back to the queue, a flow run
#: back to running (it closes itself when its retried task runs end).
REOPENED: frozenset[RunState] = frozenset({RunState.PENDING, RunState.RUNNING})

#: Dashboard colours per state: (solid colour, badge background, badge text), CSS values.
COLOURS: dict[RunState, tuple[str, str, str]] = {
    RunState.PENDING: ("#9ca3af", "#f3f4f6", "#4b5563"),
    RunState.SCHEDULED: ("#06b6d4", "#ecfeff", "#0e7490"),
    RunState.RUNNING: ("#2563eb", "#eff6ff", "#1d4ed8"),
    RunState.RETRYING: ("#f59e0b", "#fffbeb", "#b45309"),
    RunState.COMPLETED: ("#16a34a", "#f0fdf4", "#15803d"),
    RunState.CACHED: ("#0d9488", "#f0fdfa", "#0f766e"),
    RunState.FAILED: ("#dc2626", "#fef2f2", "#b91c1c"),
    RunState.TIMED_OUT: ("#c2410c", "#fff7ed", "#9a3412"),
    RunState.CRASHED: ("#c026d3", "#fdf4ff", "#a21caf"),
    RunState.CANCELLED: ("#475569", "#f1f5f9", "#334155"),
}


def can_transition(current: RunState | None, new: RunState) -> bool:
    """Tell whether a run in ``current`` (None: not created yet) may move to ``new`` (a
    user's retry may also reopen a terminal run: see REOPENED)."""
    return new in ALLOWED.get(current, frozenset())

