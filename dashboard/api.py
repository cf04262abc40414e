"""The JSON API under ``/api/`` (documented in ``/api/openapi.json``), live events and actions.

Every answer is a model of schemas.py; query strings are parsed by models too, so a bad
parameter is a 400 naming it, and the OpenAPI document is generated from the same models.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from flowkit._ids import is_run_id, shown
from flowkit.dashboard import queries
from flowkit.dashboard import schemas as s
from flowkit.store import flow_runs, keys, task_runs
from flowkit.store.events import parse_state_events

#: Seconds an idle event stream waits before sending a keep-alive comment.
KEEPALIVE_SECONDS = 15

Q = TypeVar("Q", bound=BaseModel)


def parse_query(model: type[Q], request: Request) -> Q:
    """The query string as ``model``; a 400 naming the first bad parameter otherwise."""
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"])
        value = request.query_params.get(name, "")
        raise HTTPException(400, f"query parameter {name}={value!r}: {error['msg']}") from None


def answer(model: BaseModel, status_code: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json"), status_code=status_code)


def list_runs(request: Request) -> Response:
    return answer(queries.runs_page(request.app.state.client, parse_query(s.RunsQuery, request)))


def get_run(request: Request) -> Response:
    run_id = request.path_params["run_id"]
    detail = queries.run_detail(request.app.state.client, run_id,
                                parse_query(s.RunQuery, request))
    if detail is None:
        raise HTTPException(404, f"no flow run {shown(run_id)}")
    return answer(detail)


def _flow_run_id(request: Request) -> str:
    """The path's run id; a 404 when it cannot be one (it would name another key)."""
    run_id: str = request.path_params["run_id"]
    if not is_run_id(run_id):
        raise HTTPException(404, f"no flow run {shown(run_id)}")
    return run_id


def get_run_logs(request: Request) -> Response:
    run_id = _flow_run_id(request)
    query = parse_query(s.LogsQuery, request)
    return answer(queries.logs_after(request.app.state.client, run_id, query.after))


def get_task(request: Request) -> Response:
    task_run_id = request.path_params["task_run_id"]
    detail = queries.task_detail(request.app.state.client, task_run_id)
    if detail is None:
        raise HTTPException(404, f"no task run {shown(task_run_id)}")
    return answer(detail)


def list_workers(request: Request) -> Response:
    return answer(queries.workers(request.app.state.client))


def list_queues(request: Request) -> Response:
    return answer(queries.queues(request.app.state.client))


def _require_action_header(request: Request) -> None:
    # A custom header cannot be sent cross-site without a CORS preflight, which this app never
    # grants: a page elsewhere cannot make the browser cancel runs behind the user's back.
    if request.headers.get("x-flowkit-action") != "1":
        raise HTTPException(403, "actions need the header X-Flowkit-Action: 1")


def _existing_run(request: Request) -> str:
    _require_action_header(request)
    run_id = _flow_run_id(request)
    if flow_runs.get_flow_run(request.app.state.client, run_id) is None:
        raise HTTPException(404, f"no flow run {shown(run_id)}")
    return run_id


def cancel_run(request: Request) -> Response:
    run_id = _existing_run(request)
    dropped, stopping = task_runs.cancel(
        request.app.state.client, request.app.state.limits, flow_run_id=run_id,
        message=f"flow run {run_id} cancelled from the dashboard")
    return answer(s.CancelResult(flow_run_id=run_id, dropped=dropped, stopping=stopping))


def retry_run(request: Request) -> Response:
    run_id = _existing_run(request)
    retried, skipped = task_runs.retry(request.app.state.client, request.app.state.limits,
                                       run_id)
    return answer(s.RetryResult(flow_run_id=run_id, retried=retried, not_retryable=skipped))


async def events(request: Request) -> StreamingResponse:
    """Server-sent events: state changes from the events stream (of one run with ``?run=``)
    and, for one run, its new log lines, each with its HTML as the page renders it."""
    query = parse_query(s.EventsQuery, request)
    if query.run and not is_run_id(query.run):
        raise HTTPException(404, f"no flow run {shown(query.run)}")
    return StreamingResponse(_event_stream(request, query), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _event_stream(request: Request, query: s.EventsQuery) -> AsyncIterator[str]:
    client = request.app.state.async_client
    render_log = request.app.state.render_log_line
    run_id = query.run
    # Start from each stream's current last id, not "$": with two streams, "$" would skip
    # whatever is added to one while XREAD returns for the other.
    streams = {keys.EVENTS: await _last_id(client, keys.EVENTS)}
    if run_id:
        streams[keys.logs(run_id)] = query.logs_after or await _last_id(client, keys.logs(run_id))
    yield "retry: 2000\n\n"
    while not await request.is_disconnected():
        try:
            reply = await client.xread(streams, count=500, block=KEEPALIVE_SECONDS * 1000)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Redis away: tell the page, let it reconnect
            yield f"event: error\ndata: {json.dumps({'message': str(exc)})}\n\n"
            await asyncio.sleep(2)
            continue
        if not reply:
            yield ": keep-alive\n\n"
            continue
        for stream, entries in reply:
            name = stream.decode()
            streams[name] = entries[-1][0].decode()
            for entry_id, fields in entries:
                for message in _messages(name, entry_id.decode(), fields, run_id, render_log):
                    yield message


def _messages(stream: str, entry_id: str, raw: dict[bytes, bytes], run_id: str | None,
              render_log: Any) -> list[str]:
    """The server-sent events for a stream entry (one per run an event entry names; none
    that are not for this client)."""
    fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
    if stream != keys.EVENTS:
        line = queries.log_line(entry_id, fields)
        data: dict[str, Any] = {**line.model_dump(mode="json"), "html": render_log(line)}
        return [f"event: log\ndata: {json.dumps(data)}\n\n"]
    out = []
    for event in parse_state_events(fields):
        if run_id and run_id not in (event.id, event.flow_run_id):
            continue
        data = {"id": event.id, "state": event.state, "flow_run_id": event.flow_run_id}
        out.append(f"event: {event.kind}\ndata: {json.dumps(data)}\n\n")
    return out


async def _last_id(client: Any, stream: str) -> str:
    newest = await client.xrevrange(stream, "+", "-", count=1)
    return str(newest[0][0].decode()) if newest else "0-0"


def openapi(request: Request) -> Response:
    from flowkit.dashboard.openapi import openapi_schema

    return JSONResponse(openapi_schema())


routes = [
    Route("/api/openapi.json", openapi),
    Route("/api/runs", list_runs),
    Route("/api/runs/{run_id}", get_run),
    Route("/api/runs/{run_id}/logs", get_run_logs),
    Route("/api/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
    Route("/api/runs/{run_id}/retry", retry_run, methods=["POST"]),
    Route("/api/tasks/{task_run_id}", get_task),
    Route("/api/workers", list_workers),
    Route("/api/queues", list_queues),
    Route("/api/events", events),
]
