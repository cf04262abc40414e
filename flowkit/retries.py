"""Retry policy: how long to wait before the next attempt and whether to retry at all (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def exponential_backoff(backoff_factor: float,
                        max_delay: float | None = None) -> Callable[[int], list[float]]:
    """Delays ``backoff_factor * 2**n`` for retry n (0-based), each capped at ``max_delay``.

    Prefect's shape: the result is passed as ``retry_delay_seconds`` and called with the number
    of retries to get one delay per retry.

    Example:
        ``@task(retries=4, retry_delay_seconds=exponential_backoff(1, max_delay=5))`` waits
        1, 2, 4 and 5 seconds.
    """
    if backoff_factor < 0 or (max_delay is not None and max_delay < 0):
        from flowkit.errors import ConfigurationError

        raise ConfigurationError("exponential_backoff needs a non-negative factor and max_delay")

    def delays(retries: int) -> list[float]:
        values = [backoff_factor * 2 ** n for n in range(max(retries, 1))]
        return [min(v, max_delay) if max_delay is not None else v for v in values]

    delays.__qualname__ = f"exponential_backoff({backoff_factor}, max_delay={max_delay})"
    return delays


def delay_before_retry(retry_delay_seconds: Any, retries: int, attempt: int,
                       jitter_factor: float | None = None,
                       rng: random.Random | None = None) -> float:
    """Seconds to wait after failed ``attempt`` (1-based) before the next one.

    ``retry_delay_seconds`` is a number, a list (one delay per retry, the last repeats) or a
    callable given ``retries`` that returns such a list (or a number). ``jitter_factor`` j
    spreads the delay uniformly over ``delay * (1 +- j)`` so that retries of many failed tasks
    do not hit a recovering service at the same instant.
    """
    value = retry_delay_seconds(retries) if callable(retry_delay_seconds) else retry_delay_seconds
    if isinstance(value, (list, tuple)):
        delay = float(value[min(attempt - 1, len(value) - 1)]) if value else 0.0
    else:
        delay = float(value or 0.0)
    if jitter_factor and delay > 0:
        spread = jitter_factor * delay
        delay = max(0.0, delay + (rng or random).uniform(-spread, spread))
    return delay


@dataclass(frozen=True)
class TaskInfo:
    """What a ``retry_condition_fn`` learns about the task."""

    name: str
    fn: Callable[..., Any]


@dataclass(frozen=True)
class TaskRunInfo:
    """What a ``retry_condition_fn`` learns about the task run."""

    id: str
    flow_run_id: str
    attempt: int  #: the attempt that just failed, 1-based
    retries: int  #: retries allowed in all


@dataclass(frozen=True)
class FailedState:
    """The failed attempt's state, as a ``retry_condition_fn`` sees it."""

    name: str  #: "Failed" or "TimedOut"
    exception: BaseException
    message: str

    def is_failed(self) -> bool:
        return True


def should_retry(options: dict[str, Any], attempt: int, exc: BaseException,
                 task: TaskInfo, task_run: TaskRunInfo) -> bool:
    """Whether failed ``attempt`` gets another: retries left, ``retry_on`` and the condition."""
    if attempt > int(options.get("retries") or 0):
        return False
    retry_on = options.get("retry_on")
    if retry_on and not isinstance(exc, tuple(retry_on)):
        return False
    condition = options.get("retry_condition_fn")
    if condition is not None:
        state = FailedState("TimedOut" if isinstance(exc, TimeoutError) else "Failed", exc,
                            str(exc))
        return bool(condition(task, task_run, state))
    return True
