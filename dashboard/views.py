"""Server-rendered HTML: the pages, and the fragments of them that live updates swap in.

Each page includes its live part from a partial template (``_<page>_live.html``); the
fragment routes render that same partial, so the browser never renders a row itself. State
names and colours come from ``flowkit/states.py``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from importlib import resources
from typing import Any

from markupsafe import Markup
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from flowkit._ids import shown
from flowkit.dashboard import queries
from flowkit.dashboard import schemas as s
from flowkit.dashboard.api import parse_query
from flowkit.states import ACTIVE_STATES, ALL_STATES, COLOURS, RETRYABLE_STATES, TERMINAL_STATES

templates = Jinja2Templates(directory=str(resources.files("flowkit.dashboard") / "templates"))


def when(ts: float | None) -> str:
    """Absolute local time, with the date only when it is not today."""
    if not ts:
        return "-"
    moment = dt.datetime.fromtimestamp(ts)
    fmt = "%H:%M:%S" if moment.date() == dt.date.today() else "%Y-%m-%d %H:%M:%S"
    return moment.strftime(fmt)


def ago(ts: float | None) -> str:
    """How long ago, in words a person reads at a glance."""
    if not ts:
        return "-"
    return f"{duration(max(0.0, time.time() - ts))} ago"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60)} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60)} min"


def _names(states: Any) -> list[str]:
    return [state.value for state in ALL_STATES if state in states]


templates.env.filters.update(when=when, ago=ago, duration=duration,
                             tojson_pretty=lambda v: json.dumps(v, indent=2, default=str))
templates.env.globals.update(
    STATES=[state.value for state in ALL_STATES], TERMINAL=_names(TERMINAL_STATES),
    ACTIVE=_names(ACTIVE_STATES), RETRYABLE=_names(RETRYABLE_STATES),
    STATE_COLOURS=[(state.value, *COLOURS[state]) for state in ALL_STATES])


def render_log_line(line: s.LogLine) -> str:
    """One log line's HTML, from the macro the run page renders its log with."""
    macro = templates.env.get_template("_macros.html").module.log_line  # type: ignore[attr-defined]
    return str(Markup(macro(line)))


def _page(request: Request, template: str, nav: str, **context: Any) -> Response:
    return templates.TemplateResponse(request, template, {"nav": nav, **context})


def _fragment(request: Request, template: str, **context: Any) -> Response:
    html = templates.get_template(template).render({"request": request, **context})
    return HTMLResponse(html, headers={"Cache-Control": "no-store"})


def _run(request: Request) -> s.RunDetail:
    run_id = request.path_params["run_id"]
    detail = queries.run_detail(request.app.state.client, run_id,
                                parse_query(s.RunQuery, request))
    if detail is None:
        raise HTTPException(404, f"no flow run {shown(run_id)}")
    return detail


def _task(request: Request) -> s.TaskDetail:
    task_run_id = request.path_params["task_run_id"]
    detail = queries.task_detail(request.app.state.client, task_run_id)
    if detail is None:
        raise HTTPException(404, f"no task run {shown(task_run_id)}")
    return detail


def home(request: Request) -> Response:
    return RedirectResponse(request.url_for("runs"), status_code=307)


def runs(request: Request) -> Response:
    page = queries.runs_page(request.app.state.client, parse_query(s.RunsQuery, request))
    return _page(request, "runs.html", "runs", page=page)


def runs_fragment(request: Request) -> Response:
    page = queries.runs_page(request.app.state.client, parse_query(s.RunsQuery, request))
    return _fragment(request, "_runs_live.html", page=page)


def run(request: Request) -> Response:
    return _page(request, "run.html", "runs", d=_run(request))


def run_fragment(request: Request) -> Response:
    return _fragment(request, "_run_live.html", d=_run(request))


def task(request: Request) -> Response:
    return _page(request, "task.html", "runs", d=_task(request))


def task_fragment(request: Request) -> Response:
    return _fragment(request, "_task_live.html", d=_task(request))


def workers(request: Request) -> Response:
    return _page(request, "workers.html", "workers",
                 workers=queries.workers(request.app.state.client))


def workers_fragment(request: Request) -> Response:
    return _fragment(request, "_workers_live.html",
                     workers=queries.workers(request.app.state.client))


def queues(request: Request) -> Response:
    return _page(request, "queues.html", "queues",
                 queues=queries.queues(request.app.state.client))


def queues_fragment(request: Request) -> Response:
    return _fragment(request, "_queues_live.html",
                     queues=queries.queues(request.app.state.client))


routes = [
    Route("/", home),
    Route("/runs", runs, name="runs"),
    Route("/runs/{run_id}", run, name="run"),
    Route("/tasks/{task_run_id}", task, name="task"),
    Route("/workers", workers, name="workers"),
    Route("/queues", queues, name="queues"),
    Route("/fragments/runs", runs_fragment),
    Route("/fragments/runs/{run_id}", run_fragment),
    Route("/fragments/tasks/{task_run_id}", task_fragment),
    Route("/fragments/workers", workers_fragment),
    Route("/fragments/queues", queues_fragment),
]
