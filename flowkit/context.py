"""The run context: which flow run or task run the current code belongs to."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowkit.futures import TaskFuture


@dataclass
class FlowRunContext:
    """Set while a flow function runs in the driver."""

    flow_run_id: str
    flow_name: str
    log_prints: bool = False
    futures: list[TaskFuture[Any]] = field(default_factory=list)
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class TaskRunContext:
    """Set while a task body runs inside an executor."""

    task_run_id: str
    flow_run_id: str
    task_name: str
    attempt: int
    reply_to: str
    log_prints: bool
    client: Any = None
    parameters: dict[str, Any] = field(default_factory=dict)


flow_run_ctx: ContextVar[FlowRunContext | None] = ContextVar("flowkit_flow_run", default=None)
task_run_ctx: ContextVar[TaskRunContext | None] = ContextVar("flowkit_task_run", default=None)
