"""enqueue.lua writes each run's two records from field lists built once per call: a chunk
that mixes plain runs with big, held and upstream-waiting ones must leave every record exactly
as if each had been built alone (no field of one run carried into the next)."""

from __future__ import annotations

from typing import Any

from flowkit.store import keys, task_runs
from flowkit.store.task_runs import TaskRunSpec

from library_fixtures import QUEUE, REPLY, seed_flow_run

#: The compact layout (transitions.lua): p parameters, c created (epoch µs); the task name is
#: the flow run's (task_name), since every run of this chunk is of its first task.
SHARED = {"flow_run_id", "queue", "state", "c", "p"}
JOB = {"created_at", "data", "origin", "timeout", "status", "flowkit_envelope"}


def _spec(task_run_id: str, **fields: Any) -> TaskRunSpec:
    fields.setdefault("body", b"body-" + task_run_id.encode())
    return TaskRunSpec(id=task_run_id, flow_run_id="f1", task_name="t", queue=QUEUE,
                       envelope=b"head-" + task_run_id.encode(), reply_to=REPLY,
                       parameters=f'{{"x": "{task_run_id}"}}', **fields)


def test_mixed_chunk_leaves_each_record_as_built_alone(client, limits) -> None:
    seed_flow_run(client, "f1")
    big = b"b" * (task_runs.LARGE_BODY_BYTES + 1)
    specs = [_spec("a1"), _spec("b2", body=big), _spec("h3", held=True, upstream=["a1"]),
             _spec("p4"), _spec("u5", upstream=["a1", "p4"]), _spec("p6")]
    task_runs.enqueue_task_runs(client, limits, specs)
    extra = {"a1": set(), "b2": {"big"}, "h3": {"upstream"}, "p4": set(), "u5": {"upstream"},
             "p6": set()}
    for s in specs:
        record = {k.decode(): v.decode() for k, v in client.hgetall(keys.task_run(s.id)).items()}
        assert set(record) == SHARED | extra[s.id], s.id
        assert record["p"] == s.parameters
        assert record["state"] == "pending"
        if s.upstream:
            assert record["upstream"] == ",".join(s.upstream)
        job = {k.decode(): v for k, v in client.hgetall(keys.rq_job(s.id)).items()}
        assert set(job) == JOB | {"flowkit_body"}, s.id
        assert job["flowkit_envelope"] == s.envelope
        assert job["flowkit_body"] == (big if s.id == "b2" else s.body)
        assert s.id.encode() in job["data"]
        assert job["timeout"] == b"-1"
        assert job["status"] == (b"deferred" if s.held else b"queued")
    assert client.hget(keys.flow_run("f1"), "task_name") == b"t"
    queued = [i.decode() for i in client.lrange(keys.queue(QUEUE), 0, -1)]
    assert queued == ["a1", "b2", "p4", "u5", "p6"]
    index = [i.decode() for i in client.lrange(keys.flow_run_tasks("f1"), 0, -1)]
    assert index == [s.id for s in specs]
    counts = client.hmget(keys.flow_run("f1"), "n_pending", "n_total")
    assert [int(c) for c in counts] == [6, 6]
