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


@task
def record_run(path: str, seconds: float, label: str = "") -> str:
    """Append this executor's pid to ``path`` (one line per execution), wait, return a tag."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(seconds)
    return f"done by {os.getpid()}{label}"


@task
def exit_hard(code: int = 7) -> None:
    """Kill the executor process, every time (a poison pill)."""
    os._exit(code)


@task
def sleep_ignoring_signals(seconds: float) -> str:
    """Blocking code that a soft timeout cannot interrupt."""
    import signal

    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    time.sleep(seconds)
    return "woke up"


from flowkit.caching import INPUTS, TASK_SOURCE  # noqa: E402


@task(cache_policy=INPUTS + TASK_SOURCE)
def cached_count(marker: str, payload: object = None, delay: float = 0.0) -> str:
    """Record each real execution in ``marker``; the return value says which one it was."""
    with open(marker, "a") as f:
        f.write("x\n")
    time.sleep(delay)
    with open(marker) as f:
        return f"execution {len(f.read().split())}"


class Opaque:
    """Picklable, but with no stable encoding for a cache key."""


@task(log_prints=True)
def print_lines(n: int) -> int:
    """Print ``n`` numbered lines (log capture tests)."""
    for i in range(n):
        print(f"line {i}")
    return n


@task(log_prints=True)
def print_then_exit_hard(wait: float) -> None:
    """Print a line, give the log buffer ``wait`` seconds, then kill the executor process."""
    print(f"pid {os.getpid()} before the crash")
    time.sleep(wait)
    os._exit(9)


@task
def fail_first_time(path: str) -> str:
    """Fail on the first execution (recorded in ``path``), succeed on the next ones."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        runs = len(f.read().split())
    if runs == 1:
        raise RuntimeError("first attempt fails on purpose")
    return f"ran {runs} times"
