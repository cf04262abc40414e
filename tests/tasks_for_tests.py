"""Tasks importable by worker processes (tests import them by module name)."""

from __future__ import annotations

import os
import time

from flowkit import get_run_logger, task


class CustomError(Exception):
    """An exception type defined by user code, rebuilt on the driver."""


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def square(x: int) -> int:
    return x * x


@task
def identity(x: object) -> object:
    return x


@task
def whoami(delay: float = 0.0) -> int:
    """The pid of the executor that ran the call."""
    time.sleep(delay)
    return os.getpid()


@task
def fail(message: str) -> None:
    raise CustomError(message)


@task
def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


@task(log_prints=True)
def chatty(n: int) -> int:
    logger = get_run_logger()
    for i in range(n):
        logger.info("line %d of %d", i + 1, n)
    print(f"printed {n}")
    return n
