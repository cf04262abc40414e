"""The OpenAPI 3.1 description of the dashboard's JSON API (served at /api/openapi.json)."""

from __future__ import annotations

from typing import Any

from flowkit._version import __version__
from flowkit.states import RunState


def _param(name: str, where: str, schema: dict[str, Any], description: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": description}


_NUMBER = {"type": "number"}
_STRING = {"type": "string"}
_INT = {"type": "integer", "minimum": 0}
_RUN_ID = _param("run_id", "path", _STRING, "flow run id")


def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {"application/json": {"schema": {"$ref":
                                                                f"#/components/schemas/{schema}"}}}},
            "400": {"description": "invalid parameters"}}


def openapi_schema() -> dict[str, Any]:
    """The schema: every route under /api/, its parameters and the shape of its answer."""
    states = [s.value for s in RunState]
    run_row = {"type": "object", "properties": {
        "id": _STRING, "name": _STRING, "kind": _STRING, "state": {"enum": states},
        "created": _NUMBER, "started": {"type": ["number", "null"]},
        "ended": {"type": ["number", "null"]}, "duration": {"type": ["number", "null"]},
        "task_counts": {"type": "object", "additionalProperties": {"type": "integer"}},
        "task_total": {"type": "integer"}, "task_finished": {"type": "integer"},
        "progress_pct": _NUMBER, "tags": {"type": "array"}, "parent": _STRING,
        "attempt": {"type": "integer"}}}
    task_row = {"type": "object", "properties": {
        "id": _STRING, "task_name": _STRING, "flow_run_id": _STRING, "state": {"enum": states},
        "queue": _STRING, "attempt": {"type": "integer"}, "retries": {"type": "integer"},
        "worker": _STRING, "started": {"type": ["number", "null"]},
        "ended": {"type": ["number", "null"]}, "duration": {"type": ["number", "null"]},
        "cache_hit": {"type": "boolean"}, "cache_key": _STRING, "error_type": _STRING,
        "error_message": _STRING}}
    schemas = {
        "RunRow": run_row, "TaskRow": task_row,
        "RunsPage": {"type": "object", "required": ["runs", "counts", "next_cursor"],
                     "properties": {"runs": {"type": "array",
                                             "items": {"$ref": "#/components/schemas/RunRow"}},
                                    "counts": {"type": "object"},
                                    "next_cursor": {"type": ["number", "null"]},
                                    "filters": {"type": "object"}}},
        "RunDetail": {"type": "object", "required": ["run", "tasks", "timeline", "page", "logs"],
                      "properties": {"run": {"type": "object"},
                                     "tasks": {"type": "array",
                                               "items": {"$ref": "#/components/schemas/TaskRow"}},
                                     "timeline": {"type": "object"}, "page": {"type": "object"},
                                     "logs": {"type": "array"}, "logs_cursor": _STRING}},
        "Logs": {"type": "object", "properties": {"logs": {"type": "array"}}},
        "TaskDetail": {"type": "object", "required": ["task", "history"],
                       "properties": {"task": {"type": "object"},
                                      "history": {"type": "array"}}},
        "Workers": {"type": "object", "properties": {"workers": {"type": "array"}}},
        "Queues": {"type": "object", "properties": {"queues": {"type": "array"},
                                                    "dead_letters": {"type": "array"}}},
        "CancelResult": {"type": "object", "properties": {
            "flow_run_id": _STRING, "dropped": {"type": "integer"},
            "stopping": {"type": "integer"}}},
        "RetryResult": {"type": "object", "properties": {
            "flow_run_id": _STRING, "retried": {"type": "integer"},
            "not_retryable": {"type": "integer"}}},
    }
    action_header = _param("X-Flowkit-Action", "header", {"const": "1"},
                           "required on actions (cross-site protection)", required=True)
    paths = {
        "/api/runs": {"get": {"summary": "Flow runs, newest first", "parameters": [
            _param("state", "query", {"enum": states}, "only runs in this state"),
            _param("name", "query", _STRING, "only runs of this flow"),
            _param("since", "query", _NUMBER, "created at or after (epoch seconds)"),
            _param("until", "query", _NUMBER, "created at or before (epoch seconds)"),
            _param("cursor", "query", _NUMBER, "next_cursor of the previous page"),
            _param("limit", "query", _INT, "page size (default 50, at most 500)")],
            "responses": _ok("a page of flow runs and counts per state", "RunsPage")}},
        "/api/runs/{run_id}": {"get": {"summary": "One flow run with a page of task runs",
                                       "parameters": [
            _RUN_ID, _param("offset", "query", _INT, "first task run of the page"),
            _param("limit", "query", _INT, "task runs per page (default 100)")],
            "responses": {**_ok("the flow run", "RunDetail"),
                          "404": {"description": "no such flow run"}}}},
        "/api/runs/{run_id}/logs": {"get": {"summary": "Log lines after a stream id",
                                            "parameters": [
            _RUN_ID, _param("after", "query", _STRING, "stream id of the last line seen")],
            "responses": _ok("log lines, oldest first", "Logs")}},
        "/api/runs/{run_id}/cancel": {"post": {"summary": "Cancel a flow run",
                                               "parameters": [_RUN_ID, action_header],
            "responses": {**_ok("what was cancelled", "CancelResult"),
                          "403": {"description": "missing action header"},
                          "404": {"description": "no such flow run"}}}},
        "/api/runs/{run_id}/retry": {"post": {"summary": "Retry a flow run's failed task runs",
                                              "parameters": [_RUN_ID, action_header],
            "responses": {**_ok("what was retried", "RetryResult"),
                          "403": {"description": "missing action header"},
                          "404": {"description": "no such flow run"}}}},
        "/api/tasks/{task_run_id}": {"get": {"summary": "One task run and its history",
                                             "parameters": [
            _param("task_run_id", "path", _STRING, "task run id")],
            "responses": {**_ok("the task run", "TaskDetail"),
                          "404": {"description": "no such task run"}}}},
        "/api/workers": {"get": {"summary": "Live workers",
                                 "responses": _ok("workers", "Workers")}},
        "/api/queues": {"get": {"summary": "Queues: depth, running, throughput",
                                "responses": _ok("queues", "Queues")}},
        "/api/events": {"get": {"summary": "Server-sent events: state changes and log lines",
                                "parameters": [_param("run", "query", _STRING,
                                                      "only events of this flow run")],
                                "responses": {"200": {"description": "an event stream",
                                                      "content": {"text/event-stream": {}}}}}},
        "/api/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": {"description": "OpenAPI 3.1"}}}},
    }
    return {"openapi": "3.1.0",
            "info": {"title": "flowkit dashboard API", "version": __version__},
            "paths": paths, "components": {"schemas": schemas}}
