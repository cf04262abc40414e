"""The driver's dependency tracker: which held task runs a finished upstream releases or fails
(pure: no Redis, no threads)."""

from __future__ import annotations

from flowkit._dependencies import DependencyTracker, Failed


def test_a_run_is_released_once_every_upstream_completed() -> None:
    deps = DependencyTracker()
    deps.hold("c", {"a", "b"})
    assert deps.finished("a", success=True).ready == []
    assert deps.is_held("c")
    decision = deps.finished("b", success=True)
    assert (decision.ready, decision.failed) == (["c"], [])
    assert not deps.is_held("c") and len(deps) == 0


def test_a_failed_upstream_fails_what_waits_on_it_transitively() -> None:
    deps = DependencyTracker()
    deps.hold("b", {"a"})
    deps.hold("c", {"b"})
    deps.hold("d", {"c", "x"})
    deps.hold("e", {"x"})
    decision = deps.finished("a", success=False)
    assert decision.ready == []
    assert decision.failed == [Failed("b", "a"), Failed("c", "b"), Failed("d", "c")]
    assert deps.is_held("e") and not deps.is_held("d")
    # x completing later releases e only: d is gone.
    assert deps.finished("x", success=True).ready == ["e"]


def test_an_upstream_that_had_failed_before_submit_fails_the_run_at_once() -> None:
    deps = DependencyTracker()
    deps.hold("b", set())
    deps.hold("c", {"b"})
    decision = deps.fail("b", "a")
    assert decision.failed == [Failed("b", "a"), Failed("c", "b")]
    assert deps.fail("b", "a").failed == []  # already decided: nothing twice


def test_unknown_upstreams_decide_nothing() -> None:
    deps = DependencyTracker()
    deps.hold("b", {"a"})
    decision = deps.finished("zzz", success=False)
    assert (decision.ready, decision.failed) == ([], [])
    assert deps.is_held("b")


def test_forget_drops_a_held_run_that_was_never_written() -> None:
    tracker = DependencyTracker()
    tracker.hold("b", {"a"})
    tracker.hold("c", {"a"})
    tracker.forget("b")
    assert not tracker.is_held("b") and len(tracker) == 1
    decision = tracker.finished("a", True)
    assert decision.ready == ["c"]  # the forgotten run is not released
