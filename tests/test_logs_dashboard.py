"""The dashboard tells how many log lines a run's capped stream dropped: JSON API and page."""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from flowkit.dashboard.app import create_app
from flowkit.store import flow_runs, keys
from flowkit.store.logs import append_log

RECORD = {"ts": "1.0", "level": "INFO", "task_run_id": "", "name": "writer"}


@pytest.fixture
def dash(redis_url, client):  # type: ignore[no-untyped-def]
    with TestClient(create_app(redis_url)) as test_client:
        yield test_client


def _run(client, limits, lines: int, keep: int) -> str:
    run_id = "dashlogs0000001"
    flow_runs.create_flow_run(client, limits, run_id, "writer")
    for i in range(lines):
        append_log(client, run_id, {**RECORD, "message": f"line {i}"})
    # What LOGS_MAXLEN does to a long run, exactly:
    client.xtrim(keys.logs(run_id), maxlen=keep, approximate=False)
    return run_id


def test_api_and_page_count_dropped_lines(client, limits, dash) -> None:
    run_id = _run(client, limits, 10, keep=4)
    detail = dash.get(f"/api/runs/{run_id}").json()
    assert detail["log_counts"] == {"written": 10, "kept": 4, "dropped": 6}
    assert [line["message"] for line in detail["logs"]] == [f"line {i}" for i in range(6, 10)]
    logs = dash.get(f"/api/runs/{run_id}/logs").json()
    assert logs["log_counts"] == {"written": 10, "kept": 4, "dropped": 6}
    page = dash.get(f"/runs/{run_id}").text
    assert "6 older log lines were dropped" in page and "last 4 of 10 written" in page


def test_nothing_dropped_says_nothing(client, limits, dash) -> None:
    run_id = _run(client, limits, 3, keep=10)
    assert dash.get(f"/api/runs/{run_id}").json()["log_counts"] == {
        "written": 3, "kept": 3, "dropped": 0}
    assert "were dropped" not in dash.get(f"/runs/{run_id}").text
    schema = dash.get("/api/openapi.json").json()
    assert "LogCounts" in str(schema)
