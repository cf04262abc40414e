"""Retention: finished flow runs past FLOWKIT_RUN_RETENTION_DAYS go, with all they own."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from flowkit import flow, get_run_logger
from flowkit.states import RunState
from flowkit.store import flow_runs, keys, retention

from conftest import wait_until
from tasks_for_tests import square


@flow
def squares(n: int) -> list[int]:
    get_run_logger().info("squaring %d numbers", n)
    return [f.result() for f in square.map(range(n))]


def _owned_keys(client, flow_run_id: str) -> list[str]:
    """Every key a flow run owns: its hash, task index, logs, and per task run four keys."""
    task_ids = [t.decode() for t in client.lrange(keys.flow_run_tasks(flow_run_id), 0, -1)]
    owned = [keys.flow_run(flow_run_id), keys.flow_run_tasks(flow_run_id), keys.logs(flow_run_id)]
    for t in task_ids:
        owned += [keys.task_run(t), keys.result(t), keys.rq_job(t)]
    return owned


def _newest_run(client) -> str:
    return client.zrevrange(keys.FLOW_RUNS, 0, 0)[0].decode()


def test_prune_deletes_old_finished_runs_and_keeps_newer_and_running_ones(worker, client,
                                                                          limits):
    assert squares(n=4) == [0, 1, 4, 9]
    old = _newest_run(client)
    owned = _owned_keys(client, old)
    # the records of 4 task runs (their histories and small results inside), the logs
    assert client.exists(*owned) >= 3 + 4
    time.sleep(0.05)
    cutoff = time.time()
    time.sleep(0.05)
    assert squares(n=2) == [0, 1]
    new = _newest_run(client)
    # No end: never pruned, whatever its age.
    flow_runs.create_flow_run(client, limits, "stillrunning0001", "long-running")
    client.zadd(keys.FLOW_RUNS, {"stillrunning0001": cutoff - 10})
    before = flow_runs.count_flow_runs_by_state(client)

    pruned = retention.prune_flow_runs(client, limits, cutoff)

    assert (pruned.flow_runs, pruned.task_runs, pruned.more) == (1, 4, False)
    assert client.exists(*owned) == 0
    assert flow_runs.get_flow_run(client, old) is None
    assert client.zscore(keys.FLOW_RUNS, old) is None
    assert client.zscore(keys.flow_runs_named("squares"), old) is None
    after = flow_runs.count_flow_runs_by_state(client)
    assert after["completed"] == before["completed"] - 1 and after["running"] == before["running"]
    assert flow_runs.get_flow_run(client, new)["state"] == RunState.COMPLETED.value
    assert flow_runs.get_flow_run(client, "stillrunning0001")["state"] == "running"
    assert retention.prune_flow_runs(client, limits, cutoff) == retention.Pruned(0, 0, False)


def test_prune_works_in_bounded_batches(worker, client, limits):
    assert squares(n=10) == [i * i for i in range(10)]
    flow_run_id = _newest_run(client)
    cutoff = time.time() + 1
    steps = []
    while True:
        pruned = retention.prune_flow_runs(client, limits, cutoff, batch=3)
        steps.append((pruned.flow_runs, pruned.task_runs, pruned.more))
        if not pruned.more:
            break
    # 10 task runs, 3 per call; the flow run itself goes with the last of them.
    assert steps == [(0, 3, True), (0, 3, True), (0, 3, True), (1, 1, False)]
    assert flow_runs.get_flow_run(client, flow_run_id) is None


def test_workers_sweep_past_the_retention_period(workers, client):
    # 0.00002 days is 1.7 s: the supervisor sweeps every second (twice per retention period).
    workers.start("default", concurrency=1, env={"FLOWKIT_RUN_RETENTION_DAYS": "0.00002"})
    workers.wait_registered(client)
    assert squares(n=3) == [0, 1, 4]
    flow_run_id = _newest_run(client)
    owned = _owned_keys(client, flow_run_id)
    assert flow_runs.get_flow_run(client, flow_run_id) is not None
    wait_until(lambda: client.exists(*owned) == 0, timeout=15, message="the sweep")
    assert client.zscore(keys.FLOW_RUNS, flow_run_id) is None


def test_cli_prune_reports_what_it_deleted(worker, client, redis_url):
    assert squares(n=2) == [0, 1]
    flow_run_id = _newest_run(client)
    time.sleep(0.05)
    done = subprocess.run([sys.executable, "-m", "flowkit", "run", "prune", "--older-than",
                           "0.0000001", "--json", "--yes", "--redis-url", redis_url],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"flow_runs": 1, "task_runs": 2,
                                       "older_than_days": 1e-07, "dry_run": False}
    assert flow_runs.get_flow_run(client, flow_run_id) is None
