"""Contact and RestartBackoff (workers/contact.py): pure, with a fake clock."""

from __future__ import annotations

import logging

import pytest

from flowkit.workers.contact import REMINDER_SECONDS, Contact, RestartBackoff


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_contact_logs_the_loss_once_the_return_once_and_rare_reminders(caplog) -> None:
    clock = Clock()
    contact = Contact("worker w", logging.getLogger("test.contact"), clock=clock)
    caplog.set_level(logging.WARNING, logger="test.contact")
    contact.ok()
    for _ in range(40):  # 4 failures a second for 10 s
        clock.now += 0.25
        contact.failed(ConnectionError("timed out"))
    assert contact.is_lost and contact.silent_for() == pytest.approx(10.0)
    clock.now += REMINDER_SECONDS
    contact.failed(ConnectionError("timed out"))
    clock.now += 1
    contact.failed(ConnectionError("timed out"))
    contact.ok()
    assert not contact.is_lost and contact.silent_for() == 0.0
    gone = REMINDER_SECONDS + 10.75
    assert [r.getMessage() for r in caplog.records] == [
        "worker w: lost contact with Redis: timed out",
        f"worker w: Redis still unreachable after {gone - 1:.0f}s",
        f"worker w: contact with Redis is back after {gone:.1f}s"]


def test_restart_backoff_doubles_while_executors_die_fast_and_resets_after_a_healthy_run() -> None:
    backoff = RestartBackoff(first=0.1, cap=2.0, healthy_after=10.0)
    assert [backoff.delay(0.5) for _ in range(7)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    assert backoff.delay(30.0) == 0.0
    assert backoff.delay(0.5) == 0.1


class Probe:
    """A duty whose calls fail while ``down`` is set, as Redis calls do when cut off."""

    def __init__(self, contact: Contact | None, while_cut_off: bool) -> None:
        self.period, self.delay, self.runs, self.down = 0.0, 0.0, 0, False
        self.contact, self.while_cut_off = contact, while_cut_off

    def run(self) -> None:
        from flowkit.errors import StoreConnectionError

        self.runs += 1
        if self.down:
            raise StoreConnectionError("cannot reach Redis at redis://h:6379/0 (timed out)")
        if self.contact is not None:
            self.contact.ok()


def test_duty_runner_while_cut_off_runs_only_its_probes_and_logs_one_line(caplog) -> None:
    from flowkit.workers.duties import DutyRunner

    clock = Clock()
    contact = Contact("worker w", logging.getLogger("test.runner"), clock=clock)
    renewal, other = Probe(contact, while_cut_off=True), Probe(None, while_cut_off=False)
    runner = DutyRunner([renewal, other], "w", clock, contact=contact)
    caplog.set_level(logging.WARNING)
    renewal.down = other.down = True
    for _ in range(40):  # 4 ticks a second for 10 s
        runner.run_due()
        clock.now += 0.25
    assert contact.is_lost
    assert renewal.runs == 40 and other.runs == 0  # the others wait instead of timing out
    renewal.down = other.down = False
    runner.run_due()
    runner.run_due()
    assert not contact.is_lost and other.runs == 2
    assert [r.getMessage() for r in caplog.records] == [
        "worker w: lost contact with Redis: cannot reach Redis at redis://h:6379/0 (timed out)",
        "worker w: contact with Redis is back after 10.0s"]
