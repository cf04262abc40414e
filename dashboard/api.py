"""The JSON API under ``/api/`` (documented in ``/api/openapi.json``), live events and actions."""

from __future__ import annotations

import asyncio
import json
from typing import Any, AsyncIterator

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from flowkit.dashboard import queries
from flowkit.dashboard.openapi import openapi_schema
from flowkit.states import RunState
from flowkit.store import flow_runs, keys, task_runs
from flowkit.store.events import parse_state_event

#: Seconds an idle event stream waits before sending a keep-alive comment.
KEEPALIVE_SECONDS = 15


def _number(request: Request, name: str) -> float | None:
    value = request.query_params.get(name)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except ValueError:
        raise HTTPException(400, f"query parameter {name!r} must be a number (epoch seconds)")


def _int(request: Request, name: str, default: int, top: int) -> int:
    try:
        value = int(request.query_params.get(name, default))
    except ValueError:
        raise HTTPException(400, f"query parameter {name!r} must be an integer")
    return max(0, min(value, top))


def filters(request: Request) -> dict[str, Any]:
    """Runs-list filters from the query string (shared by the page and the API)."""
    state = request.query_params.get("state") or None
    if state is not None and state not in {s.value for s in RunState}:
        raise HTTPException(400, f"unknown state {state!r}")
    return {"state": state, "name": request.query_params.get("name") or None,
            "since": _number(request, "since"), "until": _number(request, "until"),
            "cursor": _number(request, "cursor"),
            "limit": _int(request, "limit", queries.RUN_PAGE, 500) or queries.RUN_PAGE}


def list_runs(request: Request) -> JSONResponse:
    return JSONResponse(queries.runs_page(request.app.state.client, **filters(request)))


def get_run(request: Request) -> JSONResponse:
    detail = queries.run_detail(request.app.state.client, request.path_params["run_id"],
                                offset=_int(request, "offset", 0, 10**9),
                                limit=_int(request, "limit", queries.TASK_PAGE, 1000) or 1)
    if detail is None:
        raise HTTPException(404, f"no flow run {request.path_params['run_id']!r}")
    return JSONResponse(detail)


def get_run_logs(request: Request) -> JSONResponse:
    after = request.query_params.get("after", "-")
    return JSONResponse({"logs": queries.logs_after(request.app.state.client,
                                                    request.path_params["run_id"], after)})


def get_task(request: Request) -> JSONResponse:
    detail = queries.task_detail(request.app.state.client, request.path_params["task_run_id"])
    if detail is None:
        raise HTTPException(404, f"no task run {request.path_params['task_run_id']!r}")
    return JSONResponse(detail)


def list_workers(request: Request) -> JSONResponse:
    return JSONResponse({"workers": queries.workers(request.app.state.client)})


def list_queues(request: Request) -> JSONResponse:
    client = request.app.state.client
    return JSONResponse({"queues": queries.queues(client),
                         "dead_letters": queries.dead_letters(client)})


def _require_action_header(request: Request) -> None:
    # A custom header cannot be sent cross-site without a CORS preflight, which this app never
    # grants: a page elsewhere cannot make the browser cancel runs behind the user's back.
    if request.headers.get("x-flowkit-action") != "1":
        raise HTTPException(403, "actions need the header X-Flowkit-Action: 1")


def cancel_run(request: Request) -> JSONResponse:
    _require_action_header(request)
    client, run_id = request.app.state.client, request.path_params["run_id"]
    if flow_runs.get_flow_run(client, run_id) is None:
        raise HTTPException(404, f"no flow run {run_id!r}")
    dropped, stopping = task_runs.cancel(client, request.app.state.limits, flow_run_id=run_id,
                                    message=f"flow run {run_id} cancelled from the dashboard")
    return JSONResponse({"flow_run_id": run_id, "dropped": dropped, "stopping": stopping})


def retry_run(request: Request) -> JSONResponse:
    _require_action_header(request)
    client, run_id = request.app.state.client, request.path_params["run_id"]
    if flow_runs.get_flow_run(client, run_id) is None:
        raise HTTPException(404, f"no flow run {run_id!r}")
    retried, skipped = task_runs.retry(client, request.app.state.limits, run_id)
    return JSONResponse({"flow_run_id": run_id, "retried": retried, "not_retryable": skipped})


async def events(request: Request) -> StreamingResponse:
    """Server-sent events: state changes from the events stream (of one run with ``?run=``)
    and, for one run, its new log lines."""
    run_id = request.query_params.get("run") or None
    return StreamingResponse(_event_stream(request, run_id), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _event_stream(request: Request, run_id: str | None) -> AsyncIterator[str]:
    client = request.app.state.async_client
    # Start from each stream's current last id, not "$": with two streams, "$" would skip
    # whatever is added to one while XREAD returns for the other.
    streams = {keys.EVENTS: await _last_id(client, keys.EVENTS)}
    if run_id:
        streams[keys.logs(run_id)] = (request.query_params.get("logs_after")
                                      or await _last_id(client, keys.logs(run_id)))
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
                data = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
                if name == keys.EVENTS:
                    event = parse_state_event(data)
                    if event is None or (run_id and run_id not in (event.id, event.flow_run_id)):
                        continue
                    kind, data = event.kind, {"id": event.id, "state": event.state,
                                              "flow_run_id": event.flow_run_id}
                else:
                    kind, data = "log", queries.log_line(entry_id.decode(), data)
                yield f"event: {kind}\ndata: {json.dumps(data)}\n\n"


async def _last_id(client: Any, stream: str) -> str:
    newest = await client.xrevrange(stream, "+", "-", count=1)
    return str(newest[0][0].decode()) if newest else "0-0"


def openapi(request: Request) -> JSONResponse:
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
