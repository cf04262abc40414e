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
