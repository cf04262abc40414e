"""The state model: terminal states and allowed transitions (pure, no Redis)."""

from __future__ import annotations

from flowkit.states import ALL_STATES, TERMINAL_STATES, RunState, can_transition


def test_terminal_states_never_change() -> None:
    for state in TERMINAL_STATES:
        assert state.is_terminal
        assert not any(can_transition(state, other) for other in ALL_STATES)


def test_the_lifecycle_the_scripts_follow_is_allowed() -> None:
    path = [RunState.PENDING, RunState.RUNNING, RunState.RETRYING, RunState.PENDING,
            RunState.RUNNING, RunState.COMPLETED]
    assert all(can_transition(a, b) for a, b in zip(path, path[1:]))
    assert can_transition(RunState.PENDING, RunState.CACHED)
    assert can_transition(RunState.RUNNING, RunState.CRASHED)
    assert not can_transition(RunState.PENDING, RunState.COMPLETED)
    assert RunState.CACHED.is_success and not RunState.FAILED.is_success
    assert RunState("timed_out") is RunState.TIMED_OUT
