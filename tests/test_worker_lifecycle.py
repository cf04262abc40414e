"""Worker process lifecycle under real signals: supervisor death, process trees, bounded
drains, second signals and `flowkit worker stop`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from flowkit import task
from flowkit.cli import cli
from flowkit.store import task_runs
from flowkit.workers.process_tree import group_members

from conftest import TESTS_DIR, alive, children, wait_until
from tasks_for_tests import identity, sleep_then

pytestmark = pytest.mark.slow

#: Short leases and heartbeats so that reaping after a death takes seconds in these tests.
FAST_LEASES = {"FLOWKIT_LEASE_SECONDS": "2", "FLOWKIT_HEARTBEAT_SECONDS": "0.3"}


def _state(client, future) -> str:
    return (client.hget(f"flowkit:taskrun:{future.task_run_id}", "state") or b"").decode()


def _start(workers, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A real `flowkit worker start` with extra options (the fixture's start has none)."""
    cmd = [sys.executable, "-m", "flowkit", "worker", "start", "--redis-url",
           workers.redis_url, *args]
    log_path = workers.log_dir / f"worker-{len(workers.procs)}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=TESTS_DIR, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(TESTS_DIR), **(env or {})},
                                start_new_session=True)
    proc.log_path = log_path  # type: ignore[attr-defined]
    workers.procs.append(proc)
    return proc


def test_supervisor_killed_alone_takes_its_executors_with_it(workers, client) -> None:
    proc = workers.start("default", concurrency=2, env=FAST_LEASES)
    workers.wait_registered(client)
    runs = [sleep_then.submit(3.0, "ran"), sleep_then.submit(3.0, "ran")]
    wait_until(lambda: all(_state(client, f) == "running" for f in runs),
               message="both executors busy")
    queued = identity.map(range(5))
    time.sleep(0.5)  # a lease renewal marks the running attempts in hand
    executors = children(proc.pid)
    assert len(executors) == 2 and client.llen("rq:queue:default") == 5

    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_until(lambda: not any(alive(p) for p in executors), timeout=1.0, interval=0.01,
               message="the executors to die with their supervisor")
    died_after = time.monotonic() - killed_at
    time.sleep(1.0)
    # Nothing more was claimed: the five stay queued, untouched, in order.
    assert client.lrange("rq:queue:default", 0, -1) == [f.task_run_id.encode() for f in queued]
    assert all(_state(client, f) == "pending" for f in queued)

    # Another worker reaps the dead one's lease: only the running attempt counts a crash.
    workers.start("default", concurrency=2, env=FAST_LEASES)
    assert [f.result(timeout=30) for f in runs] == ["ran", "ran"]
    assert [f.result(timeout=30) for f in queued] == list(range(5))
    for f in runs:
        assert client.hget(f"flowkit:taskrun:{f.task_run_id}", "crashes") == b"1"
    for f in queued:
        assert client.hget(f"flowkit:taskrun:{f.task_run_id}", "crashes") is None
        assert [h["state"] for h in task_runs.get_history(client, f.task_run_id)] == [
            "running", "completed"]
    assert died_after < 1.0


def _spawns_children_then_hangs(pids_file: str, exit_code: int | None) -> None:
    """Start a `sleep 600` child and a shell with a grandchild, then hang (or exit hard)."""
    import signal as _signal
    import subprocess as _subprocess
    import time as _time

    children = [_subprocess.Popen(["sleep", "600"]),
                _subprocess.Popen(["sh", "-c", "sleep 600 & echo $!; wait"],
                                  stdout=_subprocess.PIPE)]
    grandchild = int(children[1].stdout.readline())  # type: ignore[union-attr]
    with open(pids_file, "w") as f:
        f.write(" ".join(str(p) for p in [children[0].pid, children[1].pid, grandchild]))
    if exit_code is not None:
        os._exit(exit_code)
    _signal.signal(_signal.SIGALRM, _signal.SIG_IGN)  # deaf to the soft timeout
    _time.sleep(600)


@pytest.mark.parametrize("how", ["hard-timeout", "executor-exit", "cancel"])
def test_task_death_kills_its_whole_process_tree(workers, client, tmp_path, how) -> None:
    pids_file = tmp_path / "pids"
    hang = task(timeout_seconds=1.0 if how == "hard-timeout" else None)(
        _spawns_children_then_hangs)
    proc = workers.start("default", concurrency=1)
    workers.wait_registered(client)
    [executor] = wait_until(lambda: children(proc.pid), message="executor started")
    future = hang.submit(str(pids_file), 9 if how == "executor-exit" else None)
    pids = wait_until(lambda: pids_file.exists() and pids_file.read_text().split(),
                      timeout=15, message="the task to start its children")
    pids = [int(p) for p in pids]
    assert all(alive(p) for p in pids) or how == "executor-exit"
    if how == "cancel":
        future.cancel()
    wait_until(lambda: not any(alive(p) for p in pids), timeout=8,
               message=f"the task's children to die ({how})")
    # The executor's whole process group goes (a killed process takes a moment to exit).
    wait_until(lambda: group_members(executor) == [], timeout=2, message="an empty group")
    expected = {"hard-timeout": "timed_out", "executor-exit": "crashed", "cancel": "cancelled"}
    wait_until(lambda: _state(client, future) == expected[how], timeout=10,
               message=f"state {expected[how]}")
    assert proc.poll() is None  # the worker serves on with a new executor
    assert identity.submit("next").result(timeout=15) == "next"


@pytest.mark.parametrize("grace_from", ["option", "setting"])
def test_drain_past_grace_hands_running_attempts_back_to_the_front(workers, client,
                                                                   grace_from) -> None:
    if grace_from == "option":
        proc = _start(workers, "-c", "1", "--grace", "1")
    else:
        proc = _start(workers, "-c", "1", env={"FLOWKIT_STOP_GRACE_SECONDS": "1"})
    workers.wait_registered(client)
    running = sleep_then.submit(30.0, "slow")
    wait_until(lambda: _state(client, running) == "running", message="task to start")
    behind = identity.submit("behind")
    [executor] = children(proc.pid)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0, workers.output(proc)
    took = time.monotonic() - signalled
    assert 1.0 <= took < 4.0, took
    assert not alive(executor)
    # Handed back at once, ahead of what was queued behind it, with no crash counted.
    assert _state(client, running) == "pending"
    assert client.lrange("rq:queue:default", 0, -1) == [running.task_run_id.encode(),
                                                        behind.task_run_id.encode()]
    assert client.hget(f"flowkit:taskrun:{running.task_run_id}", "crashes") is None
    assert client.zscore("flowkit:leases", running.task_run_id) is None
    assert "handed back" in workers.output(proc)


@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_second_signal_hands_back_at_once(workers, client, second) -> None:
    proc = _start(workers, "-c", "1", "--grace", "60")
    workers.wait_registered(client)
    running = sleep_then.submit(30.0, "slow")
    wait_until(lambda: _state(client, running) == "running", message="task to start")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    assert proc.poll() is None  # still draining: the grace is a minute
    proc.send_signal(second)
    assert proc.wait(timeout=5) == 0, workers.output(proc)
    assert _state(client, running) == "pending"
    assert client.lrange("rq:queue:default", 0, -1) == [running.task_run_id.encode()]


def test_worker_stop_drains_a_worker_by_id(workers, client) -> None:
    proc = _start(workers, "-c", "1", "--name", "stop-me", "--grace", "30")
    workers.wait_registered(client)
    running = sleep_then.submit(30.0, "slow")
    wait_until(lambda: _state(client, running) == "running", message="task to start")
    asked = time.monotonic()
    result = CliRunner().invoke(cli, ["worker", "stop", "stop-me", "--grace", "0.5"])
    assert result.exit_code == 0 and "stop-me" in result.output
    assert proc.wait(timeout=5) == 0, workers.output(proc)
    assert time.monotonic() - asked < 0.5 + 1.0 + 1.0
    assert _state(client, running) == "pending"
    assert client.get("flowkit:worker:stop-me:stop") is None  # the request was taken


def test_worker_stop_finishes_running_tasks_within_the_workers_grace(workers, client) -> None:
    proc = _start(workers, "-c", "1", "--name", "stop-gently")
    workers.wait_registered(client)
    running = sleep_then.submit(1.0, "finished")
    wait_until(lambda: _state(client, running) == "running", message="task to start")
    assert CliRunner().invoke(cli, ["worker", "stop", "stop-gently"]).exit_code == 0
    assert proc.wait(timeout=10) == 0, workers.output(proc)
    assert running.result(timeout=1) == "finished"


def test_worker_stop_unknown_id_is_one_line_and_exit_2(client) -> None:
    result = CliRunner().invoke(cli, ["worker", "stop", "no-such-worker"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "no-such-worker" in lines[0] and "worker ls" in lines[0]
    assert client.get("flowkit:worker:no-such-worker:stop") is None



def test_executors_that_keep_dying_are_restarted_with_backoff(workers, client,
                                                              tmp_path) -> None:
    # Every executor dies as it starts (a broken environment on this host); the supervisor
    # lives on and spaces the restarts out instead of spinning.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import os\n"
        "with open('/proc/self/cmdline', 'rb') as f:\n"
        "    if b'flowkit.workers.executor' in f.read():\n"
        "        os._exit(5)\n")
    proc = workers.start("default", concurrency=1,
                         env={"PYTHONPATH": f"{site}{os.pathsep}{TESTS_DIR}"})
    workers.wait_registered(client)
    time.sleep(5.0)
    assert proc.poll() is None, workers.output(proc)
    restarts = [line for line in workers.output(proc).splitlines()
                if "exited with exit code 5; restarting" in line]
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 s: about six in five seconds, not one per tick.
    assert 3 <= len(restarts) <= 8, restarts
    assert any("restarting in 1.6s" in line for line in restarts), restarts
