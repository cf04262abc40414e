"""Task functions of the benchmarks: flowkit tasks and the same bodies as plain RQ functions.

Workers import this module by name (``bench_tasks``), so its folder must be on PYTHONPATH.
"""

from __future__ import annotations

import os
import time

from flowkit import task


@task(queue="bench")
def noop(x: int) -> int:
    return x


@task(queue="bench")
def sleep10ms(x: int) -> int:
    time.sleep(0.01)
    return x


@task(queue="bench")
def take_bytes(b: bytes) -> int:
    return len(b)


def rq_noop(x: int) -> int:
    return x


def rq_sleep10ms(x: int) -> int:
    time.sleep(0.01)
    return x


def rq_take_bytes(b: bytes) -> int:
    return len(b)


@task(queue="bench-recovery")
def hang_once_then_pid(marker: str) -> int:
    """The first execution writes ``marker`` and hangs (the benchmark kills its worker while
    it runs); the re-run returns at once, so the measured time is the recovery alone."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(600)
    return os.getpid()


from flowkit.caching import INPUTS  # noqa: E402


@task(queue="bench", cache_policy=INPUTS)
def cached_noop(x: int) -> int:
    return x
