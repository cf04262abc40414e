"""prune_preview counts what prune would delete, by prune's own rule, and writes nothing."""

from __future__ import annotations

from typing import Any

from flowkit.store import keys, retention

from library_fixtures import NOW, seed_flow_run, seed_task_run


def _seed(client: Any) -> None:
    seed_flow_run(client, "old_done", "completed", ended=NOW - 100)
    for i in range(3):
        seed_task_run(client, f"od{i}", "old_done", "completed")
    seed_flow_run(client, "old_busy", "completed", ended=NOW - 100)
    seed_task_run(client, "ob0", "old_busy", "pending", queued=True)  # still queued: kept
    seed_flow_run(client, "old_going", "running")  # not finished: kept
    seed_flow_run(client, "new_done", "completed", ended=NOW + 100)  # ended after the cutoff
    seed_task_run(client, "nd0", "new_done", "completed")
    client.zadd(keys.FLOW_RUNS, {"gone_hash": NOW - 200})  # an index entry without a hash


def _snapshot(client: Any) -> dict[bytes, Any]:
    return {key: client.dump(key) for key in sorted(client.keys("*"))}


def test_preview_counts_what_prune_then_deletes(client: Any, limits: Any) -> None:
    _seed(client)
    before = _snapshot(client)
    for batch in (1, 2, 1000):  # paging gives the same counts
        preview = retention.preview_prune(client, limits, NOW, batch=batch)
        assert preview == retention.Pruned(2, 3, False), batch
    assert _snapshot(client) == before  # nothing written
    assert retention.prune_all(client, limits, NOW) == retention.Pruned(2, 3, False)
    assert retention.preview_prune(client, limits, NOW) == retention.Pruned(0, 0, False)
    left = {m.decode() for m in client.zrange(keys.FLOW_RUNS, 0, -1)}
    assert left == {"old_busy", "old_going", "new_done"}
