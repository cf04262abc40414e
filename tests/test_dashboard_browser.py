"""The dashboard in headless Chromium (Debian's chromium, driven by Playwright): open the runs
page, click into a run, watch task states and logs change live, cancel with the button."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from flowkit import flow, get_run_logger
from flowkit.store import flow_runs, task_runs

from conftest import wait_until
from tasks_for_tests import sleep_then, square

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian package "
                       "chromium; `make test` installs it when it can run apt-get)"),
]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def page(dashboard_url: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        tab = browser.new_page(viewport={"width": 1280, "height": 900})
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        tab.set_default_timeout(15_000)
        tab.base = dashboard_url  # type: ignore[attr-defined]
        yield tab
        browser.close()
    assert errors == [], f"JavaScript errors: {errors}"


@flow(name="live-flow")
def live_flow() -> int:
    logger = get_run_logger()
    logger.info("phase one")
    first = sleep_then.submit(1.0, 1)
    first.result()
    logger.info("phase two")
    return sleep_then(1.0, 2) + sum(f.result() for f in square.map(range(3)))


def _run_in_thread(target: Any) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException:  # noqa: BLE001 - cancelled flows raise; the test checks state
            pass

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_runs_page_click_into_a_run_and_watch_it_live(worker, client, page) -> None:
    page.goto(page.base + "/runs")
    thread = _run_in_thread(live_flow)
    try:
        row = page.locator("#runs tr[data-run-id]").first
        row.wait_for()  # appears without a reload (live list)
        assert "live-flow" in row.inner_text()
        row.locator("a.run-link").click()
        page.wait_for_url("**/runs/*")
        page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
        # Task states and logs arrive live, without reloading the page.
        page.locator("#tasks tr[data-task-id] .state-running").first.wait_for()
        page.locator("#logs li", has_text="phase one").wait_for()
        page.locator("#logs li", has_text="phase two").wait_for()
        page.locator("#run-state.state-completed").wait_for()
        # New task rows arrive with the next refresh of the table, still without a reload.
        page.wait_for_function("document.querySelectorAll("
                               "'#tasks tr[data-task-id] .state-completed').length === 5")
        states = page.locator("#tasks tr[data-task-id] td.state").all_inner_texts()
        assert len(states) == 5 and all("completed" in s for s in states), states
        assert page.evaluate("window.__sameDocument") is True
    finally:
        thread.join(timeout=30)


def test_cancel_a_run_with_the_button(worker, client, page) -> None:
    @flow(name="to-cancel")
    def to_cancel() -> list:
        return [f.result() for f in [sleep_then.submit(60, i) for i in range(3)]]

    thread = _run_in_thread(to_cancel)
    try:
        wait_until(lambda: flow_runs.list_flow_runs(client, state="running"), message="the run")
        run_id = flow_runs.list_flow_runs(client)[0]["id"]
        wait_until(lambda: flow_runs.get_flow_run(client, run_id)["n_running"] == "2",
                   message="tasks")
        page.goto(f"{page.base}/runs/{run_id}")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("button#cancel").click()
        page.locator("#run-state.state-cancelled").wait_for()
        wait_until(lambda: flow_runs.get_flow_run(client, run_id)["n_cancelled"] == "3",
                   message="every task run cancelled")
        page.locator("#tasks tr[data-task-id] .state-cancelled").nth(2).wait_for()
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()


def test_main_pages_render(worker, client, page, tmp_path) -> None:
    live_flow()
    run_id = flow_runs.list_flow_runs(client)[0]["id"]
    task_run_id = task_runs.get_task_runs(client, run_id)[0]["id"]
    for path, marker in (("/runs", "#runs"), (f"/runs/{run_id}", "#tasks"),
                         (f"/tasks/{task_run_id}", "#history"), ("/workers", "#workers"),
                         ("/queues", "#queues")):
        page.goto(page.base + path)
        page.locator(marker).wait_for()
        page.screenshot(path=str(tmp_path / (path.strip("/").replace("/", "-") + ".png")))
    assert len(list(tmp_path.glob("*.png"))) == 5
    assert os.path.getsize(tmp_path / "runs.png") > 10_000
