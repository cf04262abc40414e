"""The CLI against the real server: listings, show --json, logs, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from click.testing import CliRunner

from flowkit import flow
from flowkit._version import __version__
from flowkit.cli import cli

from tasks_for_tests import chatty, fail, square


@flow
def mixed(n: int) -> int:
    futures = square.map(range(n))
    bad = fail.submit("cli shows this")
    try:
        bad.result()
    except Exception:
        pass
    chatty(2)
    return sum(f.result() for f in futures)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_version() -> None:
    code, out = invoke("--version")
    assert code == 0 and __version__ in out


def test_run_ls_show_logs_report_real_states(worker, client) -> None:
    assert mixed(3) == 0 + 1 + 4
    code, out = invoke("run", "ls", "--json")
    assert code == 0
    [row] = json.loads(out)
    assert row["name"] == "mixed" and row["state"] == "completed"
    assert row["task_counts"] == {"completed": 4, "failed": 1}
    assert row["task_total"] == 5

    code, out = invoke("run", "show", row["id"], "--json")
    assert code == 0
    shown = json.loads(out)
    states = sorted((t["task_name"], t["state"]) for t in shown["task_runs"])
    assert states == [("chatty", "completed"), ("fail", "failed")] + [("square", "completed")] * 3
    failed = next(t for t in shown["task_runs"] if t["state"] == "failed")
    assert failed["error_message"] == "cli shows this" and failed["attempt"] == 1
    assert failed["worker"] and failed["duration"] >= 0
    assert [h["state"] for h in failed["history"]] == ["running", "failed"]

    code, out = invoke("run", "show", row["id"][:8])  # a unique prefix works too
    assert code == 0 and "cli shows this" in out and "square" in out

    code, out = invoke("run", "logs", row["id"])
    assert code == 0
    assert "line 1 of 2" in out and "printed 2" in out

    code, out = invoke("run", "ls", "--state", "failed", "--json")
    assert code == 0 and json.loads(out) == []


def test_worker_ls_and_queue_ls(worker, client) -> None:
    square.submit(3).result(timeout=10)
    code, out = invoke("worker", "ls", "--json")
    assert code == 0
    [row] = json.loads(out)
    assert row["queues"] == ["default"] and row["concurrency"] == "2"
    assert int(row["tasks_done"]) == 1
    code, out = invoke("queue", "ls", "--json")
    assert code == 0
    assert json.loads(out) == [{"name": "default", "depth": 0, "workers": 1}]


def test_queue_depth_counts_waiting_tasks(client) -> None:
    square.map(range(7))  # no worker: they wait
    code, out = invoke("queue", "ls", "--json")
    assert json.loads(out) == [{"name": "default", "depth": 7, "workers": 0}]


def test_unknown_run_is_one_line_error(client) -> None:
    result = CliRunner().invoke(cli, ["run", "show", "doesnotexist"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: no flow run with id 'doesnotexist'; `flowkit run ls` lists recent runs"]


def test_unreachable_redis_exits_2_with_one_line(client) -> None:
    done = subprocess.run([sys.executable, "-m", "flowkit", "run", "ls", "--redis-url",
                           "redis://:secret@127.0.0.1:1/0"], capture_output=True, text=True,
                          timeout=30, env=os.environ)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot reach Redis at")
    assert "secret" not in done.stderr and "Traceback" not in done.stderr


def test_run_logs_follow_streams_until_the_run_ends(worker, client) -> None:
    import threading
    import time

    from flowkit import get_run_logger
    from flowkit.store.flow_runs import list_flow_runs

    from tasks_for_tests import sleep_then

    @flow
    def slow_talker() -> None:
        logger = get_run_logger()
        logger.info("first")
        sleep_then(1.0)
        logger.info("last")

    thread = threading.Thread(target=slow_talker)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not list_flow_runs(client) and time.monotonic() < deadline:
            time.sleep(0.02)
        run_id = list_flow_runs(client)[0]["id"]
        follower = subprocess.run([sys.executable, "-m", "flowkit", "run", "logs", run_id,
                                   "--follow"], capture_output=True, text=True, timeout=30,
                                  env=os.environ)
    finally:
        thread.join(timeout=30)
    assert follower.returncode == 0, follower.stderr
    lines = follower.stdout.strip().splitlines()
    assert [line.rsplit(" - ", 1)[-1] for line in lines] == ["first", "last"]
