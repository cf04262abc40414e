"""keep="summary": a huge map's task runs that succeed leave only their flow run's counters;
failures stay whole; their results reach the driver and no one else."""

from __future__ import annotations

import pytest

import flowkit
from flowkit import flow
from flowkit.errors import ConfigurationError
from flowkit.store import flow_runs, keys, task_runs

from tasks_for_tests import CustomError, add, fail, square

summary_square = square.with_options(keep="summary")
summary_fail = fail.with_options(keep="summary")


@flow(name="summary-map")
def summary_map(n: int) -> tuple[list[int], str]:
    futures = summary_square.map(range(n))
    failed = summary_fail.submit("boom")
    flowkit.wait([*futures, failed], timeout=60)
    with pytest.raises(CustomError):
        failed.result()
    return [f.result() for f in futures], failed.task_run_id


def test_succeeded_runs_leave_counters_and_failures_stay_whole(worker, client) -> None:
    values, failed_id = summary_map(300)
    assert values == [x * x for x in range(300)]
    run = flow_runs.list_flow_runs(client, limit=1)[0]
    record = flow_runs.get_flow_run(client, run["id"])
    assert record is not None
    assert (record["n_completed"], record["n_failed"], record["n_total"]) == ("300", "1", "301")
    assert record["n_running"] == "0" and record["n_pending"] == "0"
    # The index still names every run (cancel and prune page through it)...
    assert client.llen(keys.flow_run_tasks(run["id"])) == 301
    # ...but only the failure keeps a record, with its history; no success keeps a result.
    kept = task_runs.get_task_runs(client, run["id"])
    assert [t["id"] for t in kept] == [failed_id]
    assert [h["state"] for h in task_runs.get_history(client, failed_id)] == ["running", "failed"]
    ids = [i.decode() for i in client.lrange(keys.flow_run_tasks(run["id"]), 0, -1)]
    successes = [i for i in ids if i != failed_id]
    assert client.exists(*[keys.task_run(i) for i in successes]) == 0
    assert client.exists(*[keys.result(i) for i in successes]) == 0
    assert client.exists(*[keys.rq_job(i) for i in successes]) == 0


def test_a_summary_future_cannot_feed_another_task(worker, client) -> None:
    upstream = summary_square.submit(3)
    assert upstream.result(timeout=20) == 9
    with pytest.raises(ConfigurationError, match="keep='summary'"):
        add.submit(upstream, 1)
    assert add.submit(upstream.result(), 1).result(timeout=20) == 10


def test_keep_takes_only_full_or_summary() -> None:
    with pytest.raises(ValueError, match="keep"):
        square.with_options(keep="nothing")
