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


#: A finished record as the library wrote it before the compact layout (issue 9's own layout:
#: long names, times in epoch seconds, both history entries written out).
ISSUE9_RECORD = {
    "parameters": '{"x": 17071}', "flow_run_id": "e2d265a62122eb85", "task_name": "noop",
    "queue": "bench", "state": "completed", "created": "1796318312.089463", "attempt": "1",
    "started": "1796318313.055690", "worker": "vm-3835-4992ab",
    "executor": "vm-3835-4992ab.1",
    "h1": '["running",1796318313.055690,1,"vm-3835-4992ab"]', "hn": "2",
    "ended": "1796318313.066556", "result": b"FKS1-sealed",
    "h2": '["completed",1796318313.066556,1]'}


def test_a_record_of_the_issue_9_layout_reads_as_before(client) -> None:  # type: ignore[no-untyped-def]
    task_run_id = "1ssue9rec0rd0001"
    client.hset(keys.task_run(task_run_id), mapping=ISSUE9_RECORD)
    record = task_runs.get_task_run(client, task_run_id)
    assert record == {
        "id": task_run_id, "parameters": '{"x": 17071}', "flow_run_id": "e2d265a62122eb85",
        "task_name": "noop", "queue": "bench", "state": "completed", "attempt": "1",
        "created": "1796318312.089463", "started": "1796318313.055690",
        "ended": "1796318313.066556", "updated": "1796318313.066556",
        "worker": "vm-3835-4992ab", "executor": "vm-3835-4992ab.1", "duration": "0.010866"}
    assert task_runs.get_history(client, task_run_id) == [
        {"state": "running", "ts": 1796318313.05569, "attempt": 1, "worker": "vm-3835-4992ab"},
        {"state": "completed", "ts": 1796318313.066556, "attempt": 1,
         "worker": "vm-3835-4992ab"}]
    assert task_runs.read_result(client, task_run_id) == b"FKS1-sealed"


def test_a_run_claimed_in_the_issue_9_layout_is_finished_by_this_library(client, limits) -> None:  # type: ignore[no-untyped-def]
    """Upgraded with a run in flight: it was claimed (started, executor, its 'running' entry
    written out), and this library records its end (and corrects its start, as batched)."""
    from flowkit.store import attempts
    from flowkit.store.attempts import Claim, Outcome

    from library_fixtures import seed_flow_run

    flow_run_id, task_run_id = "f1", "1ssue9runn1ng001"
    seed_flow_run(client, flow_run_id, n_running=1, n_total=1)
    started = time.time() - 5
    client.hset(keys.task_run(task_run_id), mapping={
        "parameters": "{}", "flow_run_id": flow_run_id, "task_name": "t", "queue": "q",
        "state": "running", "created": f"{started - 1:.6f}", "attempt": "1",
        "started": f"{started:.6f}", "worker": "w1", "executor": "w1.0",
        "h1": json.dumps(["running", round(started, 6), 1, "w1"]), "hn": "1"})
    client.rpush(keys.processing("w1.0"), task_run_id)
    claim = Claim(task_run_id, b"", b"", 1, flow_run_id, "", claimed_at=100.0)
    assert attempts.finish(client, limits, "w1", "w1.0", [
        (claim, Outcome("completed", result=b"r", started=102.0))]) == [1]
    history = task_runs.get_history(client, task_run_id)
    assert [(h["state"], h["attempt"], h["worker"]) for h in history] == [
        ("running", 1, "w1"), ("completed", 1, "w1")]
    assert abs(history[0]["ts"] - (started + 2)) < 1e-5  # the corrected start
    record = task_runs.get_task_run(client, task_run_id) or {}
    assert record["state"] == "completed" and record["executor"] == "w1.0"
    assert abs(float(record["started"]) - (started + 2)) < 1e-5
    assert float(record["ended"]) == history[1]["ts"]
    assert abs(float(record["duration"]) - (history[1]["ts"] - history[0]["ts"])) < 1e-5
    assert task_runs.read_result(client, task_run_id) == b"r"
