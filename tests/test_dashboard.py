"""The dashboard against a real server holding runs made by real workers (Starlette TestClient),
plus its event stream through a real uvicorn server."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from flowkit import flow, get_run_logger, task
from flowkit.dashboard.app import create_app
from flowkit.store import flow_runs, task_runs

from conftest import wait_until
from tasks_for_tests import add, fail, sleep_then, square

ACTION = {"X-Flowkit-Action": "1"}


@flow(name="dash-demo", log_prints=True)
def dash_demo(n: int, api_token: str = "s3cret-value") -> int:
    get_run_logger().info("squaring %d numbers", n)
    futures = square.map(range(n))
    bad = fail.submit("shown in the dashboard")
    try:
        bad.result()
    except Exception:
        print("one task failed, as planned")
    return sum(f.result() for f in futures)


@pytest.fixture
def dash(redis_url, client):  # type: ignore[no-untyped-def]
    app = create_app(redis_url)
    with TestClient(app) as test_client:
        yield test_client


def test_runs_list_counts_filters_and_cursor(worker, client, dash) -> None:
    assert dash_demo(5) == 30
    for i in range(4):
        add.submit(i, i).result(timeout=10)  # an ad-hoc run, a driver-less name
    body = dash.get("/api/runs").json()
    names = [r["name"] for r in body["runs"]]
    assert "dash-demo" in names and any(n.startswith("adhoc:") for n in names)
    demo = next(r for r in body["runs"] if r["name"] == "dash-demo")
    assert demo["state"] == "completed" and demo["task_total"] == 6
    assert demo["task_counts"] == {"completed": 5, "failed": 1}
    assert demo["progress_pct"] == 100.0 and demo["duration"] > 0
    assert body["counts"]["completed"] >= 1
    only = dash.get("/api/runs", params={"name": "dash-demo"}).json()["runs"]
    assert [r["id"] for r in only] == [demo["id"]]
    assert dash.get("/api/runs", params={"state": "failed"}).json()["runs"] == []
    assert dash.get("/api/runs", params={"state": "bogus"}).status_code == 400
    assert dash.get("/api/runs", params={"since": time.time() + 60}).json()["runs"] == []


def test_cursor_pagination_walks_every_run_once(worker, client, dash) -> None:
    @flow(name="paged")
    def paged(i: int) -> int:
        return i

    for i in range(5):
        paged(i)
    seen, cursor = [], None
    while True:
        params = {"name": "paged", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = dash.get("/api/runs", params=params).json()
        seen += [r["id"] for r in page["runs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 5 and len(set(seen)) == 5


def test_run_detail_tasks_timeline_logs_and_masked_secrets(worker, client, dash) -> None:
    dash_demo(4)
    run_id = flow_runs.list_flow_runs(client)[0]["id"]
    detail = dash.get(f"/api/runs/{run_id}").json()
    assert detail["run"]["parameters"] == {"n": 4, "api_token": "***"}
    assert sorted(t["state"] for t in detail["tasks"]) == ["completed"] * 4 + ["failed"]
    failed = next(t for t in detail["tasks"] if t["state"] == "failed")
    assert failed["error_message"] == "shown in the dashboard" and failed["worker"]
    assert len(detail["timeline"]["bars"]) == 5
    assert all(0 <= b["start_pct"] <= 100 for b in detail["timeline"]["bars"])
    messages = [line["message"] for line in detail["logs"]]
    assert "squaring 4 numbers" in messages and "one task failed, as planned" in messages
    assert "s3cret" not in json.dumps(detail)
    page = dash.get(f"/api/runs/{run_id}", params={"offset": 2, "limit": 2}).json()
    assert [t["id"] for t in page["tasks"]] == [t["id"] for t in detail["tasks"][2:4]]
    assert dash.get("/api/runs/nope").status_code == 404


def test_task_detail_shows_every_attempt(worker, client, dash, tmp_path) -> None:
    @task(retries=1)
    def flaky(path: str) -> str:
        with open(path, "a") as f:
            f.write("x")
        if len(open(path).read()) == 1:
            raise ConnectionError("first attempt fails")
        return "ok"

    future = flaky.submit(str(tmp_path / "m"))
    assert future.result(timeout=10) == "ok"
    detail = dash.get(f"/api/tasks/{future.task_run_id}").json()
    assert [(h["state"], h["attempt"]) for h in detail["history"]] == [
        ("running", 1), ("failed", 1), ("running", 2), ("completed", 2)]
    assert detail["history"][1]["message"] == "first attempt fails"
    assert detail["task"]["attempt"] == 2 and detail["task"]["retries"] == 1


def test_workers_and_queues(worker, client, dash) -> None:
    [f.result(timeout=10) for f in square.map(range(7))]
    [row] = dash.get("/api/workers").json()["workers"]
    assert row["queues"] == ["default"] and row["concurrency"] == 2
    wait_until(lambda: dash.get("/api/workers").json()["workers"][0]["tasks_done"] == 7,
               message="the worker's counters")
    queues = dash.get("/api/queues").json()["queues"]
    [default] = [q for q in queues if q["name"] == "default"]
    assert default["depth"] == 0 and default["workers"] == 1 and default["running"] == 0
    assert sum(default["done_per_minute"]) == 7 and len(default["done_per_minute"]) == 15


def test_cancel_action_needs_the_header_and_cancels(worker, client, dash) -> None:
    futures = sleep_then.map([30, 30, 30], [0, 1, 2])  # one call: one ad-hoc run holds all
    run_id = task_runs.get_task_run(client, futures[0].task_run_id)["flow_run_id"]
    wait_until(lambda: flow_runs.get_flow_run(client, run_id)["n_running"] == "2", message="start")
    assert dash.post(f"/api/runs/{run_id}/cancel").status_code == 403
    answer = dash.post(f"/api/runs/{run_id}/cancel", headers=ACTION).json()
    assert answer == {"flow_run_id": run_id, "dropped": 1, "stopping": 2}
    wait_until(lambda: flow_runs.get_flow_run(client, run_id)["n_cancelled"] == "3", timeout=10,
               message="running attempts to be killed")
    assert dash.get(f"/api/runs/{run_id}").json()["run"]["state"] == "cancelled"


def test_retry_action_reruns_failed_tasks_and_closes_the_run(worker, client, dash,
                                                             tmp_path) -> None:
    marker = tmp_path / "healed"

    @task
    def needs_fix(path: str) -> str:
        if not Path(path).exists():
            raise RuntimeError("not fixed yet")
        return "fixed"

    @flow(name="retry-me")
    def retry_me(path: str) -> str:
        return needs_fix(path)

    with pytest.raises(RuntimeError):
        retry_me(str(marker))
    run_id = flow_runs.list_flow_runs(client, state="failed")[0]["id"]
    marker.write_text("now it works")
    answer = dash.post(f"/api/runs/{run_id}/retry", headers=ACTION).json()
    assert answer == {"flow_run_id": run_id, "retried": 1, "not_retryable": 0}
    wait_until(lambda: flow_runs.get_flow_run(client, run_id)["state"] == "completed", timeout=15,
               message="the retried run to close itself")
    detail = dash.get(f"/api/runs/{run_id}").json()
    assert detail["run"]["task_counts"] == {"completed": 1}
    task_run_id = detail["tasks"][0]["id"]
    history = dash.get(f"/api/tasks/{task_run_id}").json()["history"]
    assert [h["state"] for h in history] == ["running", "failed", "pending", "running",
                                             "completed"]


def test_openapi_documents_every_api_route(dash) -> None:
    schema = dash.get("/api/openapi.json").json()
    assert schema["openapi"].startswith("3.")
    documented = set(schema["paths"])
    routes = {r.path for r in dash.app.routes if getattr(r, "path", "").startswith("/api/")}
    assert routes == documented


def test_dashboard_never_unpickles() -> None:
    import ast

    package = Path(__file__).resolve().parent.parent / "dashboard"
    for source in package.rglob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                assert not any("pickle" in n or n.endswith("serializers") for n in names), source
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr == "loads":
                    assert isinstance(node.func.value, ast.Name) and node.func.value.id == "json"


def test_event_stream_delivers_state_changes_and_logs(worker, client, dashboard_url) -> None:
    @flow(name="streamed")
    def streamed() -> int:
        get_run_logger().info("hello stream")
        return sleep_then(0.5, 1)

    runner = threading.Thread(target=streamed)
    events: list[tuple[str, dict]] = []
    with httpx.Client(timeout=10) as http:
        with http.stream("GET", f"{dashboard_url}/api/events") as stream:
            runner.start()
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind:
                    events.append((kind, json.loads(line[6:])))
                    if kind == "flow" and events[-1][1]["state"] == "completed":
                        break
    runner.join(timeout=10)
    task_states = [e["state"] for k, e in events if k == "task"]
    assert task_states == ["running", "completed"]
    assert [e["state"] for k, e in events if k == "flow"] == ["running", "completed"]
    run_id = next(e["id"] for k, e in events if k == "flow")
    with httpx.Client(timeout=10) as http:
        with http.stream("GET", f"{dashboard_url}/api/events",
                         params={"run": run_id, "logs_after": "0-0"}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and "hello stream" in line:
                    break


def test_event_stream_of_one_run_has_its_task_events_and_logs(worker, client,
                                                              dashboard_url) -> None:
    @flow(name="followed")
    def followed() -> int:
        logger = get_run_logger()
        first = sleep_then.submit(0.8, 1)
        wait_until(lambda: task_runs.get_task_run(client, first.task_run_id)["state"] == "running")
        logger.info("between the tasks")  # log lines and task events interleave on the page
        return first.result() + sleep_then(0.3, 1)

    runner = threading.Thread(target=followed)
    runner.start()
    try:
        wait_until(lambda: flow_runs.list_flow_runs(client, state="running"), message="the run")
        run_id = flow_runs.list_flow_runs(client)[0]["id"]
        seen: list[tuple[str, str]] = []
        with httpx.Client(timeout=10) as http:
            with http.stream("GET", f"{dashboard_url}/api/events",
                             params={"run": run_id, "logs_after": "0-0"}) as stream:
                kind = None
                for line in stream.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        data = json.loads(line[6:])
                        seen.append((kind, data.get("state") or data.get("message", "")))
                        if ("flow", "completed") in seen:
                            break
    finally:
        runner.join(timeout=15)
    assert ("log", "between the tasks") in seen
    assert seen.count(("task", "completed")) == 2, seen
    assert ("task", "running") in seen


def _timeless(html: str) -> str:
    """HTML without what ticks between two renders (durations, ages, "... ago" titles)."""
    import re

    html = re.sub(r'<td class="(duration|heartbeat)[^"]*"[^>]*>[^<]*</td>', "", html)
    return re.sub(r' title="[^"]* ago"', "", html)


def _section(html: str, start: str, end: str) -> str:
    begin = html.index(start)
    return html[begin:html.index(end, begin)]


def test_live_fragments_are_the_page_parts_rendered_by_the_same_templates(worker, client,
                                                                          dash) -> None:
    dash_demo(3)
    run_id = flow_runs.list_flow_runs(client)[0]["id"]
    task_run_id = task_runs.get_task_runs(client, run_id)[0]["id"]
    for page, fragment, start, end in (
            (f"/runs/{run_id}", f"/fragments/runs/{run_id}", '<table id="tasks"', "</table>"),
            ("/runs", "/fragments/runs", '<table id="runs"', "</table>"),
            (f"/tasks/{task_run_id}", f"/fragments/tasks/{task_run_id}", '<table id="history"',
             "</table>"),
            ("/workers", "/fragments/workers", '<table id="workers"', "</table>"),
            ("/queues", "/fragments/queues", '<table id="queues"', "</table>")):
        whole, part = dash.get(page), dash.get(fragment)
        assert whole.status_code == part.status_code == 200, fragment
        assert "<html" not in part.text and 'data-live' in whole.text
        assert (_timeless(_section(part.text, start, end))
                == _timeless(_section(whole.text, start, end)))
    assert dash.get("/fragments/runs/nope").status_code == 404
    assert dash.get("/fragments/runs", params={"state": "bogus"}).status_code == 400


def test_state_colours_come_from_the_state_model(dash) -> None:
    from flowkit.states import COLOURS, RunState

    html = dash.get("/runs").text
    solid, background, text = COLOURS[RunState.FAILED]
    assert f".state-failed {{ --c: {solid}; --bg: {background}; --fg: {text}; }}" in html
    css = (Path(__file__).resolve().parent.parent / "dashboard" / "static" / "app.css")
    assert ".state-failed" not in css.read_text()


def test_the_browser_code_renders_no_rows_of_its_own() -> None:
    folder = Path(__file__).resolve().parent.parent / "dashboard" / "static" / "js"
    sources = {p.name: p.read_text() for p in folder.glob("*.js")}
    assert "main.js" in sources and len(sources) >= 5
    for name, text in sources.items():
        assert "createElement" not in text and "innerHTML" not in text, name
        assert len(text.splitlines()) < 150, name


def test_openapi_schemas_are_the_answer_models(dash) -> None:
    from flowkit.dashboard import schemas

    components = dash.get("/api/openapi.json").json()["components"]["schemas"]
    for model in (schemas.RunsPage, schemas.RunDetail, schemas.TaskDetail, schemas.Queues):
        assert set(components[model.__name__]["properties"]) == set(model.model_fields)
    assert components["RunState"]["enum"] == [s.value for s in
                                              __import__("flowkit").RunState]
    runs = dash.get("/api/openapi.json").json()["paths"]["/api/runs"]["get"]
    assert {p["name"] for p in runs["parameters"]} == set(schemas.RunsQuery.model_fields)


def test_log_events_carry_the_line_as_the_page_renders_it(worker, client, dash,
                                                          dashboard_url) -> None:
    @flow(name="logged")
    def logged() -> None:
        get_run_logger().info("rendered <once>")

    logged()
    run_id = flow_runs.list_flow_runs(client)[0]["id"]
    with httpx.Client(timeout=10) as http:
        with http.stream("GET", f"{dashboard_url}/api/events",
                         params={"run": run_id, "logs_after": "0-0"}) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: ") and "rendered" in line:
                    data = json.loads(line[6:])
                    break
    assert "rendered &lt;once&gt;" in data["html"] and data["html"].startswith("<li ")
    assert _timeless(data["html"]) in _timeless(dash.get(f"/runs/{run_id}").text)
