"""The supervisor's duty runner (pure scheduling, a fake clock): each duty runs when due, a
failing one is logged and retried next period, others go on."""

from __future__ import annotations

import logging

import pytest

from flowkit.workers.duties import DutyRunner


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Counting:
    def __init__(self, period: float, delay: float = 0.0, fails: bool = False) -> None:
        self.period, self.delay, self.fails, self.runs = period, delay, fails, 0

    def run(self) -> None:
        self.runs += 1
        if self.fails:
            raise ConnectionError("Redis away")


def test_each_duty_runs_on_its_own_period() -> None:
    clock = Clock()
    every_tick, every_second, later = Counting(0.0), Counting(1.0), Counting(5.0, delay=2.0)
    runner = DutyRunner([every_tick, every_second, later], "w1", clock)
    for _ in range(31):  # 3 seconds in ticks of 0.1 s
        runner.run_due()
        clock.now += 0.1
    assert every_tick.runs == 31
    assert every_second.runs == 3  # at 0, 1.0 and 2.0 s
    assert later.runs == 1  # first run after its 2 s delay


def test_a_failing_duty_is_logged_and_does_not_stop_the_others(caplog) -> None:
    clock = Clock()
    broken, healthy = Counting(1.0, fails=True), Counting(1.0)
    runner = DutyRunner([broken, healthy], "w1", clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            runner.run_due()
            clock.now += 1.0
    assert broken.runs == healthy.runs == 3
    assert "Counting failed: Redis away" in caplog.text


def test_the_supervisors_duties_and_their_periods() -> None:
    from flowkit.workers import duties

    host = object()  # constructing a duty touches nothing
    made = [duties.LeaseRenewal(host, 2.0, 15.0), duties.RetryPromotion(host),
            duties.CancelWatch(host), duties.HardTimeouts(host, 1.0), duties.Reaper(host),
            duties.RetentionSweep(host, 30.0)]
    assert [(type(d).__name__, d.period, d.delay) for d in made] == [
        ("LeaseRenewal", 2.0, 0.0), ("RetryPromotion", duties.POLL_SECONDS, 0.0),
        ("CancelWatch", duties.POLL_SECONDS, 0.0), ("HardTimeouts", 0.0, 0.0),
        ("Reaper", duties.REAP_SECONDS, 0.0), ("RetentionSweep", duties.PRUNE_SECONDS, 1.0)]
    # Two sweeps per retention period, never more often than every second.
    assert duties.RetentionSweep(host, 0.00002).period == pytest.approx(1.0)
    assert duties.RetentionSweep(host, 0.0001).period == pytest.approx(4.32)
