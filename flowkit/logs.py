"""Run loggers and print capture: log lines go to the flow run's stream in Redis.

Lines written inside a task (on a worker) go to the flow run's log stream and to the stream of
the driver that submitted it, which echoes them to its own stderr as they arrive. They are
buffered in the executor (:class:`flowkit.store.logs.LogBuffer`): a line costs microseconds,
and the executor writes what is pending before it records the attempt's outcome, so the logs
are complete and in order when the future resolves. Lines written by the flow function itself
(in the driver) are stored and echoed directly.
"""

from __future__ import annotations

import builtins
import io
import logging
import sys
import time
from typing import TYPE_CHECKING, Any

from flowkit.context import flow_run_ctx, task_run_ctx

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from flowkit.store.logs import Line, LogBuffer

_original_print = builtins.print
_installed = False
_task_buffer: LogBuffer | None = None


class _RunLogHandler(logging.Handler):
    """Ships records of run loggers to Redis."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            ship(record.levelname, self.format(record), record.created)
        except Exception:
            self.handleError(record)


def ship(level: str, message: str, created: float | None = None) -> None:
    """Store one log line for the current run (task run or flow run)."""
    created = created or time.time()
    task_ctx = task_run_ctx.get()
    if task_ctx is not None and task_ctx.client is not None:
        task_log_buffer(task_ctx.client).add(task_ctx.flow_run_id, task_ctx.reply_to, {
            "ts": repr(created), "level": level, "message": message,
            "task_run_id": task_ctx.task_run_id, "name": task_ctx.task_name})
        return
    from flowkit.store.logs import append_log

    flow_ctx = flow_run_ctx.get()
    if flow_ctx is not None:
        from flowkit.driver import get_driver

        driver = get_driver()
        record = {"ts": repr(created), "level": level, "message": message,
                  "task_run_id": "", "name": flow_ctx.flow_name}
        append_log(driver.client, flow_ctx.flow_run_id, record)
        driver.echo({**record, "flow_run_id": flow_ctx.flow_run_id})


def task_log_buffer(client: Any) -> LogBuffer:
    """The buffer of task log lines of this process (an executor), writing through
    ``client``."""
    from flowkit.store.logs import LogBuffer

    global _task_buffer
    if _task_buffer is None or _task_buffer.client is not client:
        if _task_buffer is not None:
            _task_buffer.close()
        _task_buffer = LogBuffer(client)
    return _task_buffer


def buffered_task_logs() -> AbstractContextManager[list[Line]]:
    """A context manager giving the pending task log lines with the buffer's write lock held
    (an empty list when nothing was buffered): the executor writes them in the pipeline that
    records outcomes, before the outcomes."""
    import contextlib

    if _task_buffer is None:
        return contextlib.nullcontext([])
    return _task_buffer.writing()


_handler = _RunLogHandler()
_handler.setFormatter(logging.Formatter("%(message)s"))


def get_run_logger(name: str | None = None) -> logging.Logger:
    """A logger whose records are stored with the current flow or task run.

    Outside any run it is an ordinary ``logging`` logger named ``flowkit.run``.
    """
    if task_run_ctx.get() is not None:
        logger_name = f"flowkit.run.task.{name or task_run_ctx.get().task_name}"  # type: ignore[union-attr]
    elif flow_run_ctx.get() is not None:
        logger_name = f"flowkit.run.flow.{name or flow_run_ctx.get().flow_name}"  # type: ignore[union-attr]
    else:
        return logging.getLogger("flowkit.run")
    logger = logging.getLogger(logger_name)
    if _handler not in logger.handlers:
        logger.addHandler(_handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def _capturing_print(*args: Any, **kwargs: Any) -> None:
    task_ctx = task_run_ctx.get()
    flow_ctx = flow_run_ctx.get()
    wants = (task_ctx.log_prints if task_ctx is not None
             else flow_ctx.log_prints if flow_ctx is not None else False)
    target = kwargs.get("file")
    if not wants or (target is not None and target not in (sys.stdout, sys.__stdout__)):
        _original_print(*args, **kwargs)
        return
    buffer = io.StringIO()
    _original_print(*args, **{**kwargs, "file": buffer, "flush": False})
    ship("INFO", buffer.getvalue().rstrip("\n"))


def install_print_capture() -> None:
    """Route ``print`` to the run log where ``log_prints`` is on (idempotent)."""
    global _installed
    if not _installed:
        builtins.print = _capturing_print
        _installed = True
