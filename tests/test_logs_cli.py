"""`flowkit run logs` (every page, --tail, --json, the dropped count) and `flowkit run prune`
(asks first, --yes, --dry-run), through the CLI against the real server."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from flowkit import flow
from flowkit.cli import cli
from flowkit.store import flow_runs, keys
from flowkit.store.logs import LogBuffer

from conftest import TESTS_DIR
from tasks_for_tests import square

RECORD = {"ts": "1.0", "level": "INFO", "task_run_id": "", "name": "writer"}


@flow
def three_squares() -> int:
    return sum(f.result() for f in square.map(range(3)))


def _run_with_lines(client, limits, count: int, run_id: str = "logsrun00000001") -> str:
    flow_runs.create_flow_run(client, limits, run_id, "writer")
    buffer = LogBuffer(client, max_lines=5000, flush_seconds=60)
    for i in range(count):
        buffer.add(run_id, "", {**RECORD, "message": f"line {i}"})
    buffer.close()
    return run_id


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_run_logs_prints_every_page(client, limits) -> None:
    run_id = _run_with_lines(client, limits, 25_000)
    result = invoke("run", "logs", run_id)
    assert result.exit_code == 0, result.output
    messages = [line.rsplit(" - ", 1)[1] for line in result.stdout.splitlines()]
    assert messages == [f"line {i}" for i in range(25_000)]
    assert result.stderr == ""  # nothing was dropped


def test_run_logs_tail_and_json(client, limits) -> None:
    run_id = _run_with_lines(client, limits, 50)
    result = invoke("run", "logs", run_id, "--tail", "3", "--json")
    assert result.exit_code == 0
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["message"] for r in rows] == ["line 47", "line 48", "line 49"]
    assert rows[0]["name"] == "writer" and rows[0]["level"] == "INFO"


def test_run_logs_bad_tail_is_one_line_and_exit_2(client, limits) -> None:
    run_id = _run_with_lines(client, limits, 5)
    for bad in ("0", "-3", "ten", "1.5"):
        result = invoke("run", "logs", run_id, "--tail", bad)
        assert result.exit_code == 2, (bad, result.output)
        assert result.stdout == ""
        [line] = result.stderr.splitlines()
        assert "--tail" in line and repr(bad) in line


@pytest.mark.slow
def test_run_logs_says_how_many_lines_the_cap_dropped(client, limits) -> None:
    run_id = _run_with_lines(client, limits, 120_000)
    kept = client.xlen(keys.logs(run_id))
    assert 100_000 <= kept < 120_000
    result = invoke("run", "logs", run_id)
    assert result.exit_code == 0
    assert len(result.stdout.splitlines()) == kept
    assert result.stdout.splitlines()[-1].endswith("line 119999")
    assert result.stderr == (f"flowkit: {120_000 - kept} older log lines of flow run {run_id} "
                             f"were dropped (the stream keeps the last {kept} of 120000 "
                             "written)\n")
    result = invoke("run", "logs", run_id, "--json", "--tail", "2")
    assert result.stderr == ""  # the last 2 lines are all there
    result = invoke("run", "logs", run_id, "--json", "--tail", "110000")
    assert json.loads(result.stderr) == {"flow_run_id": run_id, "written": 120_000,
                                         "kept": kept, "dropped": 120_000 - kept}
    assert len(result.stdout.splitlines()) == kept


def _old_run(client) -> str:
    assert three_squares() == 0 + 1 + 4
    time.sleep(0.05)  # it ended more than --older-than 1e-7 days (8.6 ms) ago
    return client.zrevrange(keys.FLOW_RUNS, 0, 0)[0].decode()


PRUNE = ("run", "prune", "--older-than", "0.0000001")


def test_prune_without_yes_on_a_pipe_deletes_nothing(worker, client) -> None:
    run_id = _old_run(client)
    for extra in ((), ("--json",)):
        result = invoke(*PRUNE, *extra)
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert "--yes" in line and "--dry-run" in line
        assert flow_runs.get_flow_run(client, run_id) is not None


def test_prune_dry_run_counts_and_deletes_nothing(worker, client) -> None:
    run_id = _old_run(client)
    result = invoke(*PRUNE, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"flow_runs": 1, "task_runs": 3,
                                         "older_than_days": 1e-07, "dry_run": True}
    assert flow_runs.get_flow_run(client, run_id) is not None
    assert client.llen(keys.flow_run_tasks(run_id)) == 3
    result = invoke(*PRUNE, "--dry-run")
    assert "would delete 1 flow runs and 3 task runs" in result.stdout
    result = invoke(*PRUNE, "--yes", "--json")
    assert json.loads(result.stdout) == {"flow_runs": 1, "task_runs": 3,
                                         "older_than_days": 1e-07, "dry_run": False}
    assert flow_runs.get_flow_run(client, run_id) is None


def _prune_in_a_terminal(redis_url: str, answer: bytes) -> tuple[int, str]:
    """Run `flowkit run prune` with a real pseudo-terminal as stdin and answer its question."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "flowkit", *PRUNE, "--redis-url", redis_url],
                            stdin=terminal, stdout=terminal, stderr=terminal, cwd=TESTS_DIR,
                            env=os.environ.copy())
    os.close(terminal)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"[y/N]" not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([controller], [], [], 1.0)[0]:
                seen += os.read(controller, 4096)
        os.write(controller, answer)
        code = proc.wait(timeout=30)
        while select.select([controller], [], [], 0.2)[0]:
            try:
                chunk = os.read(controller, 4096)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return code, seen.decode(errors="replace")


def test_prune_in_a_terminal_asks_with_the_counts(worker, client, redis_url) -> None:
    run_id = _old_run(client)
    code, seen = _prune_in_a_terminal(redis_url, b"n\n")
    assert code == 1 and "Delete 1 finished flow runs (3 task runs)" in seen
    assert flow_runs.get_flow_run(client, run_id) is not None
    code, seen = _prune_in_a_terminal(redis_url, b"y\n")
    assert code == 0 and "deleted 1 flow runs and 3 task runs" in seen, seen
    assert flow_runs.get_flow_run(client, run_id) is None


def test_run_logs_tail_then_follow_ends_with_the_run(client, limits) -> None:
    run_id = _run_with_lines(client, limits, 20)
    flow_runs.close_flow_run(client, limits, run_id)  # no task runs: it ends now
    assert flow_runs.get_flow_run(client, run_id)["state"] in ("completed", "failed")
    result = invoke("run", "logs", run_id, "--tail", "2", "--follow")
    assert result.exit_code == 0
    assert [line.rsplit(" - ", 1)[1] for line in result.stdout.splitlines()] == [
        "line 18", "line 19"]
