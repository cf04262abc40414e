"""Acting on runs from Python (the CLI's ``flowkit run cancel`` calls the same code)."""

from __future__ import annotations


def cancel_flow_run(flow_run_id: str, message: str = "cancelled by request") -> tuple[int, int]:
    """Cancel a flow run: its queued task runs are dropped, running attempts are killed within
    seconds, and the flow function, in whichever driver runs it, is interrupted with
    :class:`~flowkit.CancelledRun`.

    Returns:
        (task runs dropped from queues, running attempts being stopped)

    Raises:
        RunNotFound: no flow run has that id.
    """
    from flowkit.driver import get_driver
    from flowkit.errors import RunNotFound
    from flowkit.store import flow_runs, task_runs

    driver = get_driver()
    if flow_runs.get_flow_run(driver.client, flow_run_id) is None:
        raise RunNotFound(f"no flow run with id {flow_run_id!r}")
    return task_runs.cancel(driver.client, driver.limits, flow_run_id=flow_run_id,
                            message=message)
