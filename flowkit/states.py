"""Run states and the rules for moving between them (pure: no Redis here)."""

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

    @property
    def is_terminal(self) -> bool:
        """True when no further transition is allowed."""
        return self in TERMINAL_STATES

    @property
    def is_success(self) -> bool:
        """True when the run produced a result."""
        return self in (RunState.COMPLETED, RunState.CACHED)


#: States after which a run never changes again (a user retry creates a new attempt).
TERMINAL_STATES = frozenset({RunState.COMPLETED, RunState.CACHED, RunState.FAILED,
                             RunState.TIMED_OUT, RunState.CRASHED, RunState.CANCELLED})

#: Every state, in the order listings and counters show them.
ALL_STATES: tuple[RunState, ...] = tuple(RunState)

_ALLOWED: dict[RunState, frozenset[RunState]] = {
    RunState.PENDING: frozenset({RunState.SCHEDULED, RunState.RUNNING, RunState.CACHED,
                                 RunState.FAILED, RunState.CANCELLED, RunState.CRASHED}),
    RunState.SCHEDULED: frozenset({RunState.PENDING, RunState.RUNNING, RunState.CANCELLED,
                                   RunState.FAILED}),
    RunState.RUNNING: frozenset({RunState.COMPLETED, RunState.CACHED, RunState.FAILED,
                                 RunState.TIMED_OUT, RunState.CRASHED, RunState.CANCELLED,
                                 RunState.RETRYING}),
    RunState.RETRYING: frozenset({RunState.PENDING, RunState.RUNNING, RunState.CANCELLED,
                                  RunState.FAILED}),
}


def can_transition(current: RunState, new: RunState) -> bool:
    """Tell whether a run in ``current`` may move to ``new``."""
    return new in _ALLOWED.get(current, frozenset())
