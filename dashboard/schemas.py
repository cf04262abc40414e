"""The shapes of the dashboard's data: what the queries return, the JSON API answers and the
templates render. The OpenAPI document is generated from these models (openapi.py)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowkit.states import RunState


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class RunRow(_Model):
    """A flow run in lists: state, times, counts per task state, progress."""

    id: str
    name: str
    kind: str = Field(description="'flow', or 'adhoc' for task calls made outside any flow")
    state: RunState
    created: float | None
    started: float | None
    ended: float | None
    duration: float | None = Field(description="seconds, up to now while running")
    task_counts: dict[str, int] = Field(description="task runs per state (non-zero only)")
    task_total: int
    task_finished: int
    progress_pct: float
    tags: list[Any]
    parent: str = Field(description="the parent flow run of a subflow ('' for none)")
    attempt: int = Field(description="attempt of the flow function (flow retries)")


class RunInfo(RunRow):
    """One flow run in full."""

    parameters: Any = Field(description="JSON preview, truncated, secrets masked")
    result: str = Field(description="JSON preview of the return value")
    error_type: str
    error_message: str
    traceback: str


class RunFilters(_Model):
    state: RunState | None = None
    name: str | None = None
    since: float | None = None
    until: float | None = None


class RunsPage(_Model):
    """A page of flow runs, newest first, and how many runs are in each state."""

    runs: list[RunRow]
    counts: dict[str, int]
    next_cursor: float | None = Field(description="pass as `cursor` for the next page")
    filters: RunFilters


class TaskRow(_Model):
    """A task run in tables."""

    id: str
    task_name: str
    flow_run_id: str
    state: RunState
    queue: str
    attempt: int
    retries: int
    worker: str
    started: float | None
    ended: float | None
    duration: float | None
    cache_hit: bool
    cache_key: str
    error_type: str
    error_message: str


class TaskInfo(TaskRow):
    """One task run in full."""

    parameters: Any
    traceback: str
    cache_parts: Any
    upstream: list[str]
    flow_name: str
    crashes: int


class HistoryEntry(_Model):
    """One state transition of a task run (the fields present depend on the transition)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    state: str
    ts: float
    attempt: int | None = None
    worker: str | None = None
    error_type: str | None = None
    message: str | None = None
    retry_in: float | None = Field(default=None, description="seconds until the next attempt")


class TimelineBar(_Model):
    id: str
    name: str
    state: RunState
    start_pct: float
    width_pct: float


class Timeline(_Model):
    """Gantt bars of a page of task runs, as percentages of the page's time span."""

    start: float | None
    end: float | None
    bars: list[TimelineBar]


class PageInfo(_Model):
    offset: int
    limit: int
    total: int


class LogLine(_Model):
    id: str = Field(description="stream id: pass as `after` to read what follows")
    ts: float | None
    level: str
    name: str
    task_run_id: str
    message: str


class LogCounts(_Model):
    """How many log lines a run wrote, how many its capped stream still keeps, and the
    difference: the oldest lines, dropped."""

    written: int = Field(description="lines ever written to the run's log stream")
    kept: int = Field(description="lines the stream holds now (at most LOGS_MAXLEN)")
    dropped: int = Field(description="oldest lines trimmed away by the cap: written - kept")


class RunDetail(_Model):
    """One flow run: its fields, a page of task runs, their timeline and the log tail."""

    run: RunInfo
    tasks: list[TaskRow]
    timeline: Timeline
    page: PageInfo
    logs: list[LogLine]
    logs_cursor: str
    log_counts: LogCounts


class Logs(_Model):
    logs: list[LogLine]
    log_counts: LogCounts


class TaskDetail(_Model):
    """One task run and every state transition it went through."""

    task: TaskInfo
    history: list[HistoryEntry]


class WorkerRow(_Model):
    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int
    busy: int
    heartbeat: float
    heartbeat_age: float = Field(description="seconds since the last heartbeat")
    started: float | None
    tasks_done: int
    tasks_failed: int
    version: str
    state: str


class Workers(_Model):
    workers: list[WorkerRow]


class QueueRow(_Model):
    name: str
    depth: int = Field(description="task runs waiting")
    workers: int = Field(description="live workers serving the queue")
    running: int
    done_per_minute: list[int] = Field(description="the last 15 minutes, oldest first")
    failed_per_minute: list[int]
    done_last_5_minutes: int


class Queues(_Model):
    queues: list[QueueRow]
    dead_letters: list[str] = Field(description="newest dead-lettered task run ids")


class CancelResult(_Model):
    flow_run_id: str
    dropped: int = Field(description="task runs cancelled at once")
    stopping: int = Field(description="running attempts being killed")


class RetryResult(_Model):
    flow_run_id: str
    retried: int
    not_retryable: int = Field(description="failed task runs whose envelope expired")


class ErrorBody(_Model):
    error: str


# -- query strings --------------------------------------------------------------------------
def _clamp(top: int, default: int) -> Any:
    """Out-of-range page sizes are clamped (0 means the default), not refused."""
    def clamp(value: int) -> int:
        return max(0, min(value, top)) or default
    return clamp


class RunsQuery(_Model):
    """Filters and cursor of the runs list."""

    state: RunState | None = Field(default=None, description="only runs in this state")
    name: str | None = Field(default=None, description="only runs of this flow")
    since: float | None = Field(default=None, description="created at or after (epoch s)")
    until: float | None = Field(default=None, description="created at or before (epoch s)")
    cursor: float | None = Field(default=None, description="next_cursor of the previous page")
    limit: int = Field(default=50, description="page size (at most 500)")

    _limit = field_validator("limit")(_clamp(500, 50))


class RunQuery(_Model):
    """Which page of a flow run's task runs."""

    offset: int = Field(default=0, ge=0, description="first task run of the page")
    limit: int = Field(default=100, description="task runs per page (at most 1000)")

    _limit = field_validator("limit")(_clamp(1000, 100))


class LogsQuery(_Model):
    after: str = Field(default="-", description="stream id of the last line seen")


class EventsQuery(_Model):
    run: str | None = Field(default=None, description="only events (and log lines) of this "
                                                      "flow run")
    logs_after: str | None = Field(default=None, description="with run: send its log lines "
                                                             "after this stream id first")
