"""What a Ctrl-C or a notebook interrupt does to the work its call started: cancel it.

Queued and waiting task runs end CANCELLED at once, running ones are killed by their
supervisors within a fraction of a second; one bulk cancel per chunk of ids, and one line on
stderr that says how much was cancelled.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowkit.driver import Driver
    from flowkit.futures import TaskFuture

INTERRUPT_MESSAGE = "cancelled: the driver was interrupted (KeyboardInterrupt)"


def report(dropped: int, flagged: int) -> None:
    sys.stderr.write(f"flowkit: interrupted: cancelled {dropped} queued and {flagged} running "
                     "task runs\n")
    sys.stderr.flush()


def cancel_futures(driver: Driver, futures: list[TaskFuture[Any]]) -> tuple[int, int]:
    """Cancel the unfinished ones among ``futures`` (each at most once) and report it."""
    ids = [f.task_run_id for f in futures if f.claim_interrupt_cancel()]
    if not ids:
        return 0, 0
    dropped, flagged = driver.cancel_task_runs(ids, INTERRUPT_MESSAGE)
    report(dropped, flagged)
    return dropped, flagged


def cancel_after_interrupt(driver: Driver, flow_run_ids: set[str] | None = None) -> None:
    """An interrupt outside any flow: cancel the driver's unfinished ad-hoc work, that of
    ``flow_run_ids`` (a notebook cell's run), or, with None, of the current cell in IPython
    and of every ad-hoc run in a script."""
    if flow_run_ids is None and driver.adhoc.in_cells:
        cell = driver.adhoc.current_cell_run()
        flow_run_ids = {cell} if cell else set()
    try:
        driver.submissions.stop(flow_run_ids, INTERRUPT_MESSAGE)  # nothing more goes out
        cancel_futures(driver, driver.unfinished_adhoc(flow_run_ids))
    except Exception as exc:  # Redis away: say so, the KeyboardInterrupt goes on regardless
        sys.stderr.write(f"flowkit: interrupted, but could not cancel the work it started: "
                         f"{exc}\n")


def cancel_flow_after_interrupt(driver: Driver, flow_run_id: str) -> None:
    """An interrupted flow ends CANCELLED with all its task runs (one bulk call)."""
    from flowkit.store import task_runs

    try:
        driver.submissions.stop({flow_run_id}, INTERRUPT_MESSAGE)  # nothing more goes out
        dropped, flagged = task_runs.cancel(driver.client, driver.limits,
                                            flow_run_id=flow_run_id, message=INTERRUPT_MESSAGE)
        report(dropped, flagged)
    except Exception as exc:
        sys.stderr.write(f"flowkit: interrupted, but could not cancel flow run {flow_run_id}: "
                         f"{exc}\n")
