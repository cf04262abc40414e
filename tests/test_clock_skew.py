"""Hosts with wrong clocks: workers an hour ahead and an hour behind (libfaketime on the worker
processes) serve one queue together. Leases, heartbeats and due times are judged by the Redis
server's clock, so no healthy run is reaped, every body runs exactly once, retries wait their
delay, worker ages (``flowkit worker ls``, the dashboard) are never negative, and each
worker warns at start about its clock.

Needs Debian's libfaketime (``make faketime``); the tests skip, saying so, without it.
"""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from flowkit import flow
from flowkit.cli import cli
from flowkit.store import task_runs

from tasks_for_tests import fail_first_time, record_run

pytestmark = pytest.mark.slow

FAKETIME_LIBS = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
needs_faketime = pytest.mark.skipif(
    not FAKETIME_LIBS, reason="libfaketime is not installed (run `make faketime`, which "
                              "installs Debian's libfaketime)")
FAST_LEASES = {"FLOWKIT_LEASE_SECONDS": "2", "FLOWKIT_HEARTBEAT_SECONDS": "0.5"}


def _skewed(offset: str) -> dict[str, str]:
    """The environment of a process whose clock is ``offset`` off ("+1h", "-1h")."""
    return {**FAST_LEASES, "LD_PRELOAD": FAKETIME_LIBS[0], "FAKETIME": offset,
            "FAKETIME_DONT_RESET": "1"}


@needs_faketime
def test_workers_an_hour_ahead_and_behind_run_every_body_once(workers, client,
                                                              tmp_path: Path) -> None:
    ahead = workers.start("default", concurrency=2, env=_skewed("+1h"), name="ahead")
    behind = workers.start("default", concurrency=2, env=_skewed("-1h"), name="behind")
    workers.wait_registered(client, count=2)  # by the server's clock: neither looks dead

    # Bodies longer than the lease: their leases must be renewed, and not reaped by the
    # other worker's clock. Short ones too, claimed in batches (started later than claimed).
    paths = [tmp_path / f"run-{i}" for i in range(16)]
    seconds = [2.5] * 4 + [0.1] * 12
    futures: list[Any] = []

    @flow
    def skewed_flow() -> str:
        futures.extend(record_run.map([str(p) for p in paths], seconds))
        flaky = fail_first_time.with_options(retries=1, retry_delay_seconds=1.0).submit(
            str(tmp_path / "flaky"))
        futures.append(flaky)
        results = [f.result(timeout=60) for f in futures[:-1]]
        assert all(r.startswith("done by") for r in results)
        return str(flaky.result(timeout=30))

    assert skewed_flow() == "ran 2 times"
    flaky = futures.pop()

    executions = [len(p.read_text().split()) for p in paths]
    assert executions == [1] * 16, f"bodies ran more than once: {executions}"
    ran_on: set[str] = set()
    for f in futures:
        history = task_runs.get_history(client, f.task_run_id)
        assert [h["state"] for h in history] == ["running", "completed"], history
        ran_on.add(history[0]["worker"])
        record = task_runs.get_task_run(client, f.task_run_id)
        assert record is not None and "crashes" not in record
        assert 0 <= float(record["duration"]) < 10, record["duration"]
    assert ran_on == {"ahead", "behind"}

    # The retry waited its delay by the server's clock (not an hour, not at once).
    history = task_runs.get_history(client, flaky.task_run_id)
    assert [h["state"] for h in history] == ["running", "failed", "running", "completed"]
    waited = history[2]["ts"] - history[1]["ts"]
    assert 0.9 <= waited < 5, f"the retry waited {waited:.2f}s for a 1 s delay"

    result = CliRunner().invoke(cli, ["worker", "ls", "--json"])
    assert result.exit_code == 0, result.output
    ages = {row["id"]: float(row["heartbeat_age"]) for row in json.loads(result.output)}
    assert set(ages) == {"ahead", "behind"}
    assert all(0 <= age < 5 for age in ages.values()), ages
    table = CliRunner().invoke(cli, ["worker", "ls"])
    shown = [float(age) for age in re.findall(r"(-?\d+\.\d) s\b", table.output)]
    assert table.exit_code == 0 and len(shown) == 2 and min(shown) >= 0, table.output

    from flowkit.dashboard.queries import workers as dashboard_workers

    page = {row.id: row.heartbeat_age for row in dashboard_workers(client).workers}
    assert set(page) == {"ahead", "behind"} and all(0 <= age < 5 for age in page.values()), page

    for proc, sign in ((ahead, "+"), (behind, "-")):
        lines = [line for line in workers.output(proc).splitlines() if "off from the Redis" in line]
        assert len(lines) == 1, workers.output(proc)
        assert f"{sign}3600." in lines[0] or f"{sign}3599." in lines[0], lines[0]
    assert ahead.poll() is None and behind.poll() is None


def test_a_host_clock_in_step_gives_no_warning(client: Any) -> None:
    from flowkit.store.clock import SKEW_WARN_SECONDS, host_offset

    assert abs(host_offset(client)) < SKEW_WARN_SECONDS
