"""Runs recorded before issue 9 (a sorted-set task index, a history list per task run) stay
readable and prunable after the upgrade: retention must not stall on them."""

from __future__ import annotations

import json
import time

from flowkit.store import flow_runs, keys, retention, task_runs


def _old_run(client, flow_run_id: str, task_ids: list[str]) -> None:  # type: ignore[no-untyped-def]
    """What the library before issue 9 left for a finished flow run of two task runs."""
    ended = time.time() - 3600
    client.hset(keys.flow_run(flow_run_id), mapping={
        "id": flow_run_id, "name": "old", "kind": "flow", "state": "completed",
        "created": ended - 1, "ended": ended, "n_total": len(task_ids),
        "n_completed": len(task_ids)})
    client.zadd(keys.FLOW_RUNS, {flow_run_id: ended - 1})
    client.zadd(keys.flow_runs_in_state("completed"), {flow_run_id: ended - 1})
    for i, task_run_id in enumerate(task_ids):
        client.zadd(keys.flow_run_tasks(flow_run_id), {task_run_id: ended - 1 + i})
        client.hset(keys.task_run(task_run_id), mapping={
            "id": task_run_id, "flow_run_id": flow_run_id, "state": "completed",
            "attempt": 1, "created": ended - 1, "ended": ended})
        client.rpush(keys.legacy_task_run_history(task_run_id),
                     json.dumps({"state": "running", "ts": ended - 1, "attempt": 1}),
                     json.dumps({"state": "completed", "ts": ended, "attempt": 1}))


def test_an_old_run_is_listed_with_its_history_and_pruned(client, limits) -> None:  # type: ignore[no-untyped-def]
    flow_run_id, ids = "0ld0ld0ld0ld0ld0", ["0ldtask000000001", "0ldtask000000002"]
    _old_run(client, flow_run_id, ids)
    assert [t["id"] for t in task_runs.get_task_runs(client, flow_run_id)] == ids
    assert [h["state"] for h in task_runs.get_history(client, ids[0])] == ["running", "completed"]
    assert task_runs.flow_task_run_ids(client, flow_run_id) == ids
    assert retention.preview_prune(client, limits, time.time()).task_runs >= 2
    pruned = retention.prune_all(client, limits, time.time())
    assert pruned.flow_runs >= 1 and pruned.task_runs >= 2
    assert flow_runs.get_flow_run(client, flow_run_id) is None
    assert client.exists(keys.flow_run_tasks(flow_run_id), *map(keys.task_run, ids),
                         *map(keys.legacy_task_run_history, ids)) == 0
