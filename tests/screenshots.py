"""Screenshots of the dashboard's main pages for the README (``make screenshots``).

Starts its own server, a worker and the dashboard, makes some real runs (completed, failed with
retries, one still running), and saves PNGs of the main pages into the folder given.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))


def main(out: Path) -> None:
    from flowkit.embedded import free_port, start_server

    home = Path(tempfile.mkdtemp(prefix="flowkit-shots-"))
    info = start_server(home, port=free_port(), detach=False, record=False)
    os.environ.update(FLOWKIT_REDIS_URL=info.url(), FLOWKIT_HOME=str(home),
                      FLOWKIT_SECRET_KEY="screenshot-secret-key-0123456789", FLOWKIT_ECHO_LOGS="0")
    worker = subprocess.Popen([sys.executable, "-m", "flowkit", "worker", "start", "-c", "2",
                               "--name", "laptop-1"], env={**os.environ, "PYTHONPATH": str(TESTS)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ids = make_runs()
        shoot(info.url(), out, ids)
    finally:
        worker.terminate()  # the nightly run's tasks sleep on: do not wait for them
        try:
            worker.wait(timeout=5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        subprocess.run(["pkill", "-f", "flowkit.workers.executor.*laptop-1"], check=False)
        subprocess.run(["kill", str(info.pid)], check=False)
        shutil.rmtree(home, ignore_errors=True)


def make_runs() -> dict[str, str]:
    from flowkit import flow, get_run_logger, task
    from flowkit.driver import get_driver
    from flowkit.store import flow_runs, task_runs

    @task(retries=2, retry_delay_seconds=0.2)
    def fetch_page(url: str) -> int:
        if url.endswith("7"):
            raise ConnectionError(f"{url}: connection reset by peer")
        time.sleep(0.05)
        return len(url) * 100

    @task
    def summarize(sizes: list[int]) -> int:
        get_run_logger().info("summarizing %d pages", len(sizes))
        return sum(sizes)

    @flow(name="crawl-site", log_prints=True)
    def crawl(pages: int, api_token: str = "not-shown") -> int:
        print(f"crawling {pages} pages")
        sizes = fetch_page.map([f"https://example.test/p{i}" for i in range(pages)])
        ok = [f for f in sizes if f.exception() is None]
        print(f"{len(ok)} pages fetched, {pages - len(ok)} failed")
        return summarize(ok)

    @task
    def slow_step(i: int) -> int:
        time.sleep(30)
        return i

    @flow(name="nightly-report")
    def nightly() -> int:
        get_run_logger().info("starting the nightly report")
        return sum(f.result() for f in slow_step.map(range(4)))

    client = get_driver().client
    crawl(12)
    try:
        crawl(8)
    except Exception:
        pass
    threading.Thread(target=lambda: _ignore(nightly), daemon=True).start()
    time.sleep(1.5)
    crawl_id = flow_runs.search_flow_runs(client, name="crawl-site", limit=1)[0]["id"]
    retried = next(t["id"] for t in task_runs.get_task_runs(client, crawl_id)
                   if t["state"] == "failed")
    return {"run": crawl_id, "task": retried}


def _ignore(fn) -> None:  # type: ignore[no-untyped-def]
    try:
        fn()
    except BaseException:  # noqa: BLE001 - the process ends under it
        pass


def shoot(redis_url: str, out: Path, ids: dict[str, str]) -> None:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from flowkit.dashboard.app import create_app
    from flowkit.embedded import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(redis_url), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    out.mkdir(parents=True, exist_ok=True)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        tab = browser.new_page(viewport={"width": 1280, "height": 860})
        for name, path in (("runs", "/runs"), ("run", f"/runs/{ids['run']}"),
                           ("task", f"/tasks/{ids['task']}"), ("workers", "/workers"),
                           ("queues", "/queues")):
            tab.goto(f"http://127.0.0.1:{port}{path}")
            tab.wait_for_load_state("load")
            tab.wait_for_timeout(800)  # live updates settle (an event stream never idles)
            tab.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=False)
            print(f"saved {out / f'dashboard-{name}.png'}")
        browser.close()
    server.should_exit = True


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs"))
