"""Server-rendered HTML pages (a little JavaScript adds live updates)."""

from __future__ import annotations

import datetime as dt
import json
import time
from importlib import resources
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from flowkit.dashboard import queries
from flowkit.dashboard.api import filters
from flowkit.states import ALL_STATES

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


templates.env.filters.update(when=when, ago=ago, duration=duration,
                             tojson_pretty=lambda v: json.dumps(v, indent=2, default=str))
templates.env.globals.update(STATES=[s.value for s in ALL_STATES])


def home(request: Request) -> Response:
    return RedirectResponse(request.url_for("runs"), status_code=307)


def runs(request: Request) -> Response:
    page = queries.runs_page(request.app.state.client, **filters(request))
    return templates.TemplateResponse(request, "runs.html", {"page": page, "nav": "runs"})


def run(request: Request) -> Response:
    offset = max(0, int(request.query_params.get("offset", 0) or 0))
    detail = queries.run_detail(request.app.state.client, request.path_params["run_id"],
                                offset=offset)
    if detail is None:
        raise HTTPException(404, f"no flow run {request.path_params['run_id']!r}")
    return templates.TemplateResponse(request, "run.html", {"d": detail, "nav": "runs"})


def task(request: Request) -> Response:
    detail = queries.task_detail(request.app.state.client, request.path_params["task_run_id"])
    if detail is None:
        raise HTTPException(404, f"no task run {request.path_params['task_run_id']!r}")
    return templates.TemplateResponse(request, "task.html", {"d": detail, "nav": "runs"})


def workers(request: Request) -> Response:
    return templates.TemplateResponse(request, "workers.html", {
        "workers": queries.workers(request.app.state.client), "nav": "workers"})


def queues(request: Request) -> Response:
    client = request.app.state.client
    return templates.TemplateResponse(request, "queues.html", {
        "queues": queries.queues(client), "dead_letters": queries.dead_letters(client),
        "nav": "queues"})


routes = [
    Route("/", home),
    Route("/runs", runs, name="runs"),
    Route("/runs/{run_id}", run, name="run"),
    Route("/tasks/{task_run_id}", task, name="task"),
    Route("/workers", workers, name="workers"),
    Route("/queues", queues, name="queues"),
]
