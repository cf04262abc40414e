"""Run ids shaped like other keys (``<id>:tasks``, ``<id>:history``, ``:``, ``*``, very long,
empty) read as "not found" everywhere: the Python API, ``flowkit run show`` and the dashboard's
pages and JSON API, never a Redis type error, a 500 or a dropped connection."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import quote

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from flowkit import flow
from flowkit._ids import MAX_RUN_ID_LENGTH, is_run_id, new_id
from flowkit.cli import cli
from flowkit.control import cancel_flow_run
from flowkit.dashboard.app import create_app
from flowkit.errors import RunNotFound
from flowkit.store import flow_runs, task_runs

from tasks_for_tests import square


@flow(name="id-shapes")
def three() -> int:
    return sum(f.result() for f in square.map(range(3)))


@pytest.fixture
def made(worker, client) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """A finished flow run (its ``:tasks`` index exists; a task run keeps its history inside
    its record, so ``<id>:history`` names nothing, and must still be refused as an id)."""
    assert three() == 5
    run = flow_runs.list_flow_runs(client, limit=1)[0]
    task_run = task_runs.get_task_runs(client, run["id"])[0]
    assert client.type(f"flowkit:flowrun:{run['id']}:tasks") == b"list"
    assert client.type(f"flowkit:taskrun:{task_run['id']}:history") == b"none"
    return run["id"], task_run["id"]


def _bad_ids(flow_run_id: str, task_run_id: str) -> list[str]:
    return [f"{flow_run_id}:tasks", f"{task_run_id}:history", f"{flow_run_id}:*", "*",
            "a:b", "x" * 5000, f"{flow_run_id}/..", " ", "-", f"{flow_run_id}\n"]


def test_id_shape_is_checked_in_one_place() -> None:
    assert is_run_id(new_id()) and is_run_id("a" * MAX_RUN_ID_LENGTH)
    assert is_run_id("nightly-2026-01-01T00.00")
    for bad in ("", "a:b", "a*", "a" * (MAX_RUN_ID_LENGTH + 1), "a b", "é", ":tasks", None, 7):
        assert not is_run_id(bad), bad


def test_python_api_says_not_found(made, client) -> None:  # type: ignore[no-untyped-def]
    flow_run_id, task_run_id = made
    for bad in _bad_ids(flow_run_id, task_run_id):
        assert flow_runs.get_flow_run(client, bad) is None
        assert flow_runs.resolve_flow_run_id(client, bad) is None
        assert task_runs.get_task_run(client, bad) is None
        assert task_runs.get_task_state(client, bad) is None
        assert task_runs.get_task_runs(client, bad) == []
        assert task_runs.get_history(client, bad) == []
        with pytest.raises(RunNotFound):
            cancel_flow_run(bad)
    assert flow_runs.get_flow_run(client, flow_run_id) is not None  # the real one still reads
    assert task_runs.get_task_run(client, task_run_id) is not None


def test_cli_run_show_says_not_found(made) -> None:  # type: ignore[no-untyped-def]
    flow_run_id, task_run_id = made
    runner = CliRunner()
    for bad in [*_bad_ids(flow_run_id, task_run_id), ""]:
        for args in (["run", "show", bad], ["run", "show", bad, "--json"],
                     ["run", "cancel", bad], ["cache", "explain", bad]):
            result = runner.invoke(cli, args)
            assert result.exit_code == 1, (args, result.output)
            assert "no flow run" in result.output or "no task run" in result.output, result.output
            assert "WRONGTYPE" not in result.output and result.exception is not None
            assert isinstance(result.exception, SystemExit)
    long = runner.invoke(cli, ["run", "show", "x" * 5000]).output
    assert "(5000 characters)" in long and len(long) < 200, long
    ok = runner.invoke(cli, ["run", "show", flow_run_id, "--json"])
    assert ok.exit_code == 0 and flow_run_id in ok.output


@pytest.fixture
def dash(redis_url: str, client) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(create_app(redis_url), raise_server_exceptions=False) as test_client:
        yield test_client


def _paths(bad: str) -> list[tuple[str, str]]:
    quoted = quote(bad, safe=":*")
    return [("GET", f"/api/runs/{quoted}"), ("GET", f"/api/runs/{quoted}/logs"),
            ("GET", f"/api/tasks/{quoted}"), ("GET", f"/runs/{quoted}"),
            ("GET", f"/tasks/{quoted}"), ("GET", f"/fragments/runs/{quoted}"),
            ("GET", f"/fragments/tasks/{quoted}"), ("POST", f"/api/runs/{quoted}/cancel"),
            ("POST", f"/api/runs/{quoted}/retry")]


def test_dashboard_says_not_found(made, dash) -> None:  # type: ignore[no-untyped-def]
    flow_run_id, task_run_id = made
    for bad in [*_bad_ids(flow_run_id, task_run_id), ""]:
        for method, path in _paths(bad):
            response = dash.request(method, path, headers={"X-Flowkit-Action": "1"})
            if not bad and path in ("/api/runs/", "/runs/", "/fragments/runs/"):  # listings
                assert response.status_code == 200
                continue
            assert response.status_code in (404, 405), (method, path[:80], response.status_code)
            if path.startswith("/api/") and response.status_code == 404:
                assert "error" in response.json()
    long = dash.get("/api/runs/" + "x" * 5000).json()["error"]
    assert "(5000 characters)" in long and len(long) < 120, long
    response = dash.get("/api/events", params={"run": f"{flow_run_id}:tasks"})
    assert response.status_code == 404
    assert dash.get(f"/api/runs/{flow_run_id}").status_code == 200
    assert dash.get(f"/api/tasks/{task_run_id}").status_code == 200


def test_real_server_answers_long_ids(made, dashboard_url) -> None:  # type: ignore[no-untyped-def]
    flow_run_id, _ = made
    with httpx.Client(base_url=dashboard_url, timeout=10) as http:
        for bad in (f"{flow_run_id}:tasks", "y" * 8000):
            for path in (f"/api/runs/{bad}", f"/runs/{bad}"):
                assert http.get(path).status_code == 404
