"""Importing flowkit is cheap and side-effect free (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, threading
import flowkit
print(json.dumps({
    "threads": threading.active_count(),
    "modules": sorted(m for m in ("redis", "starlette", "uvicorn", "rq", "rich", "flowkit.workers",
                                  "flowkit.dashboard", "flowkit.driver") if m in sys.modules),
    "public": sorted(flowkit.__all__),
}))
"""


def test_import_flowkit_starts_nothing_heavy() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["threads"] == 1
    assert report["modules"] == []
    for name in ("task", "flow", "TaskFuture", "wait", "as_completed", "unmapped",
                 "get_run_logger", "FlowkitError"):
        assert name in report["public"]


def test_worker_and_dashboard_packages_import() -> None:
    code = "import flowkit.workers, flowkit.workers.executor, flowkit.dashboard, flowkit.cli"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr


def test_top_level_workers_folder_cannot_be_imported_by_accident() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", "import workers"], capture_output=True,
                          text=True, timeout=60, cwd=root)
    assert done.returncode != 0 and "installs as flowkit.workers" in done.stderr
