"""The OpenAPI 3.1 description of the JSON API, generated from the models in schemas.py (the
same ones the handlers answer with and parse query strings into): nothing here is written by
hand but the list of endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from flowkit._version import __version__
from flowkit.dashboard import schemas as s

_REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Endpoint:
    """One route of the API: what it takes and what it answers."""

    path: str
    method: str
    summary: str
    answer: type[BaseModel] | None
    query: type[BaseModel] | None = None
    path_params: dict[str, str] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    action: bool = False  #: needs the X-Flowkit-Action header
    media_type: str = "application/json"


_RUN = {"run_id": "flow run id"}
_MISSING_RUN = {404: "no such flow run"}
_ACTION_ERRORS = {403: "missing action header", 404: "no such flow run"}

ENDPOINTS = [
    Endpoint("/api/runs", "get", "Flow runs, newest first", s.RunsPage, s.RunsQuery),
    Endpoint("/api/runs/{run_id}", "get", "One flow run with a page of task runs",
             s.RunDetail, s.RunQuery, _RUN, _MISSING_RUN),
    Endpoint("/api/runs/{run_id}/logs", "get", "Log lines after a stream id", s.Logs,
             s.LogsQuery, _RUN),
    Endpoint("/api/runs/{run_id}/cancel", "post", "Cancel a flow run", s.CancelResult,
             path_params=_RUN, errors=_ACTION_ERRORS, action=True),
    Endpoint("/api/runs/{run_id}/retry", "post", "Retry a flow run's failed task runs",
             s.RetryResult, path_params=_RUN, errors=_ACTION_ERRORS, action=True),
    Endpoint("/api/tasks/{task_run_id}", "get", "One task run and its history", s.TaskDetail,
             path_params={"task_run_id": "task run id"}, errors={404: "no such task run"}),
    Endpoint("/api/workers", "get", "Live workers", s.Workers),
    Endpoint("/api/queues", "get", "Queues: depth, running, throughput; dead letters",
             s.Queues),
    Endpoint("/api/events", "get", "Server-sent events: state changes and log lines", None,
             s.EventsQuery, media_type="text/event-stream"),
    Endpoint("/api/openapi.json", "get", "This document", None),
]


def _parameters(endpoint: Endpoint, defs: dict[str, Any]) -> list[dict[str, Any]]:
    params = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"},
               "description": text} for name, text in endpoint.path_params.items()]
    if endpoint.query is not None:
        schema = endpoint.query.model_json_schema(ref_template=_REF)
        defs.update(schema.pop("$defs", {}))
        for name, prop in schema["properties"].items():
            params.append({"name": name, "in": "query", "required": False,
                           "description": prop.pop("description", ""), "schema": prop})
    if endpoint.action:
        params.append({"name": "X-Flowkit-Action", "in": "header", "required": True,
                       "schema": {"const": "1"},
                       "description": "required on actions (cross-site protection)"})
    return params


def _responses(endpoint: Endpoint) -> dict[str, Any]:
    content: dict[str, Any] = {endpoint.media_type: {}}
    if endpoint.answer is not None:
        content = {endpoint.media_type: {"schema": {"$ref": _REF.format(
            model=endpoint.answer.__name__)}}}
    responses: dict[str, Any] = {"200": {"description": endpoint.summary, "content": content}}
    for code, text in {400: "invalid parameters", **endpoint.errors}.items():
        responses[str(code)] = {"description": text, "content": {"application/json": {
            "schema": {"$ref": _REF.format(model="ErrorBody")}}}}
    return responses


@lru_cache(maxsize=1)
def openapi_schema() -> dict[str, Any]:
    """The document: every route under /api/, its parameters and the shape of its answer."""
    models = [s.ErrorBody] + [e.answer for e in ENDPOINTS if e.answer is not None]
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=_REF)
    defs: dict[str, Any] = dict(top.get("$defs", {}))
    paths: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        paths.setdefault(endpoint.path, {})[endpoint.method] = {
            "summary": endpoint.summary, "parameters": _parameters(endpoint, defs),
            "responses": _responses(endpoint)}
    return {"openapi": "3.1.0",
            "info": {"title": "flowkit dashboard API", "version": __version__},
            "paths": paths, "components": {"schemas": defs}}
