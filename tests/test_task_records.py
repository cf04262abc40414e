"""The compact task run record (flowkit/store/task_records.py, the layout at the top of
library/transitions.lua): what a finished run keeps, and that readers see what they saw
before from it."""

from __future__ import annotations

from typing import Any

from flowkit.store import attempts, keys, task_runs
from flowkit.store.attempts import Claim, Outcome
from flowkit.store.task_runs import CacheOptions, TaskRunSpec

from library_fixtures import QUEUE, REPLY, seed_flow_run

SEALED = b"FKS1" + b"k" * 8 + b"h" * 32 + b"p" * 16  #: the size of a small sealed result


def _enqueue(client: Any, limits: Any, task_run_id: str, task_name: str = "noop") -> None:
    if not client.exists(keys.flow_run("f1")):
        seed_flow_run(client, "f1")
    task_runs.enqueue_task_runs(client, limits, [TaskRunSpec(
        id=task_run_id, flow_run_id="f1", task_name=task_name, queue=QUEUE, envelope=b"head",
        body=b"body", reply_to=REPLY, parameters='{"x": 17071}')])


def _claim(client: Any, limits: Any, worker: str, executor: str) -> Claim:
    [claimed] = attempts.parse_claims(attempts.claim(client, limits, worker, executor, [QUEUE],
                                                     lease_seconds=30), 0.0)
    return claimed


def _raw(client: Any, task_run_id: str) -> dict[str, bytes]:
    return {k.decode(): v for k, v in client.hgetall(keys.task_run(task_run_id)).items()}


def test_a_plain_finished_run_keeps_only_what_it_cannot_imply(client, limits) -> None:  # type: ignore[no-untyped-def]
    _enqueue(client, limits, "t1")
    claimed = _claim(client, limits, "vm-1-ab", "vm-1-ab.1")
    assert attempts.finish(client, limits, "vm-1-ab", "vm-1-ab.1",
                           [(claimed, Outcome("completed", result=SEALED))]) == [1]
    raw = _raw(client, "t1")
    # (its task name is its flow run's: the first of its task runs named it there)
    assert set(raw) == {"p", "flow_run_id", "queue", "state", "c", "attempt", "b", "w", "e",
                        "result"}
    assert raw["w"] == b"vm-1-ab.1" and raw["state"] == b"completed"
    assert client.object("encoding", keys.task_run("t1")) == b"listpack"
    assert max(len(v) for v in raw.values()) < 64
    record = task_runs.get_task_run(client, "t1") or {}
    assert {k: record[k] for k in ("parameters", "task_name", "queue", "state", "attempt",
                                   "worker", "executor")} == {
        "parameters": '{"x": 17071}', "task_name": "noop", "queue": QUEUE,
        "state": "completed", "attempt": "1", "worker": "vm-1-ab", "executor": "vm-1-ab.1"}
    c, b, e = (int(raw[k]) for k in ("c", "b", "e"))
    assert float(record["created"]) == c / 1e6 and float(record["started"]) == (c + b) / 1e6
    assert float(record["ended"]) == (c + b + e) / 1e6 == float(record["updated"])
    assert float(record["duration"]) == e / 1e6
    assert task_runs.get_history(client, "t1") == [
        {"state": "running", "ts": (c + b) / 1e6, "attempt": 1, "worker": "vm-1-ab"},
        {"state": "completed", "ts": (c + b + e) / 1e6, "attempt": 1, "worker": "vm-1-ab"}]
    assert task_runs.read_result(client, "t1") == SEALED


def test_a_retried_run_writes_out_the_attempt_that_failed(client, limits) -> None:  # type: ignore[no-untyped-def]
    _enqueue(client, limits, "t1")
    first = _claim(client, limits, "w1", "w1.0")
    attempts.finish(client, limits, "w1", "w1.0", [(first, Outcome(
        "failed", error_type="builtins.ValueError", error_message="boom", retry_delay=0))])
    assert not {"b", "e"} & set(_raw(client, "t1"))  # written out: h1, h2
    second = _claim(client, limits, "w2", "w2.3")
    attempts.finish(client, limits, "w2", "w2.3", [(second, Outcome("completed", result=b"r"))])
    raw = _raw(client, "t1")
    assert raw["hn"] == b"2" and {"h1", "h2", "b", "e"} <= set(raw) and "h3" not in raw
    history = task_runs.get_history(client, "t1")
    assert [(h["state"], h["attempt"], h["worker"]) for h in history] == [
        ("running", 1, "w1"), ("failed", 1, "w1"), ("running", 2, "w2"), ("completed", 2, "w2")]
    assert history[1]["error_type"] == "builtins.ValueError" and history[1]["message"] == "boom"
    assert [h["ts"] for h in history] == sorted(h["ts"] for h in history)
    record = task_runs.get_task_run(client, "t1") or {}
    assert record["attempt"] == "2" and record["executor"] == "w2.3"
    assert float(record["started"]) == history[2]["ts"]
    assert float(record["ended"]) == history[3]["ts"]


def test_an_attempt_given_back_leaves_no_trace_of_its_claim(client, limits) -> None:  # type: ignore[no-untyped-def]
    _enqueue(client, limits, "t1")
    _claim(client, limits, "w1", "w1.0")
    assert attempts.release(client, limits, "w1", "w1.0", ["t1"]) == 1
    raw = _raw(client, "t1")
    assert raw["state"] == b"pending" and raw["attempt"] == b"0"
    assert not {"b", "w", "x", "hn"} & set(raw)
    assert task_runs.get_history(client, "t1") == []
    assert "started" not in (task_runs.get_task_run(client, "t1") or {})


def test_executor_ids_not_named_after_their_worker_are_kept_apart(client, limits) -> None:  # type: ignore[no-untyped-def]
    for task_run_id, worker, executor, stored in (
            ("t1", "w1", "rq-4242", {"w": b"w1", "x": b"rq-4242"}),
            ("t2", "w1", "7", {"w": b"w1", "x": b"7"}),
            ("t3", "w1", "w1.a", {"w": b"w1", "x": b"w1.a"}),
            ("t4", "h.12", "h.12.3", {"w": b"h.12.3"})):
        _enqueue(client, limits, task_run_id)
        _claim(client, limits, worker, executor)
        raw = _raw(client, task_run_id)
        assert {k: raw[k] for k in ("w", "x") if k in raw} == stored
        record = task_runs.get_task_run(client, task_run_id) or {}
        assert (record["worker"], record["executor"]) == (worker, executor)
        assert client.hget(keys.task_run(task_run_id), "state") == b"running"
        assert attempts.renew_leases(client, limits, worker, [task_run_id], 60) == 1


def test_a_run_answered_from_the_cache_never_ran(client, limits) -> None:  # type: ignore[no-untyped-def]
    client.set(keys.cache("k1"), SEALED)
    seed_flow_run(client, "f1")
    task_runs.enqueue_task_runs(client, limits, [TaskRunSpec(
        id="t1", flow_run_id="f1", task_name="noop", queue=QUEUE, envelope=b"head",
        body=b"body", reply_to=REPLY, cache_key="k1", cache_parts="{}")], cache=CacheOptions())
    record = task_runs.get_task_run(client, "t1") or {}
    assert record["state"] == "cached" and record["started"] == record["ended"]
    assert record["duration"] == "0.0"
    [entry] = task_runs.get_history(client, "t1")
    assert entry["state"] == "cached" and entry["ts"] == float(record["ended"])


def test_task_runs_of_another_task_than_their_flow_runs_first_name_it(client, limits) -> None:  # type: ignore[no-untyped-def]
    _enqueue(client, limits, "t1")
    _enqueue(client, limits, "t2", task_name="other")
    assert client.hget(keys.flow_run("f1"), "task_name") == b"noop"
    assert "n" not in _raw(client, "t1") and _raw(client, "t2")["n"] == b"other"
    assert [(r["id"], r["task_name"]) for r in task_runs.get_task_runs(client, "f1")] == [
        ("t1", "noop"), ("t2", "other")]
    assert [(task_runs.get_task_run(client, i) or {})["task_name"] for i in ("t1", "t2")] == [
        "noop", "other"]


def test_a_small_result_is_pickled_without_its_frame_header() -> None:
    from flowkit import serializers

    values = [70_000, 2**62, -5, None, "hello", [1, 2, 3], {"a": 1.5}, "x" * 300]
    for value in values:
        data = serializers.dumps_result(value)
        assert serializers.loads(data) == value
        assert data[2] != 0x95 or len(data) >= 256  # FRAME left out of small ones
    assert len(serializers.dumps_result(70_000)) == 8  # PROTO 5, BININT, STOP
    assert len(serializers.seal(serializers.SigningKey(b"s" * 32),
                                serializers.dumps_result(2**62))) <= 64
