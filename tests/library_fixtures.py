"""Fixture state for the library's contract tests, and what the tests observe afterwards.

``seed_*`` write runs straight into Redis the way the library would have left them; the
``observe`` function reads back everything a case may assert on, under flat names:
``task:<id>.<field>`` (as stored, and as ``task_records.fields`` shows it),
``flow:<id>.<field>``, ``queue:<name>``, ``job:<id>.status`` (None when
the RQ job is gone), ``history:<id>`` (the states), ``leases``, ``lease_in`` and
``retries_due`` (seconds from the server's now), ``events`` ((kind, id, state) tuples),
``reply:<stream>`` ((kind, id, state) tuples), ``deadletter``, ``logs:<flow run>`` (the
messages), ``cache:<key>`` (stored or not), ``processing:<executor>``.
"""

from __future__ import annotations

import time
from typing import Any

from flowkit import _replies as replies
from flowkit.states import ALL_STATES
from flowkit.store import keys, task_records, task_runs
from flowkit.store.clock import server_time
from flowkit.store.events import parse_state_events

NOW = time.time()
#: NOW in epoch microseconds, and the created time of the task runs seed_task_run writes.
NOW_US = round(NOW * 1_000_000)
CREATED_US = NOW_US - 10_000_000
QUEUE = "q"
REPLY = keys.reply("driver1")


def seed_flow_run(client: Any, flow_run_id: str, state: str = "running", **fields: Any) -> None:
    """A flow run with zeroed counters, indexed by state and name."""
    row = {"id": flow_run_id, "name": "f", "kind": "flow", "state": state, "created": NOW,
           "started": NOW, "updated": NOW, "n_total": 0, "reply_to": REPLY,
           **{f"n_{s.value}": 0 for s in ALL_STATES}, **fields}
    client.hset(keys.flow_run(flow_run_id), mapping=row)
    client.zadd(keys.FLOW_RUNS, {flow_run_id: NOW})
    client.zadd(keys.flow_runs_in_state(state), {flow_run_id: NOW})


def seed_task_run(client: Any, task_run_id: str, flow_run_id: str = "f1", state: str = "pending",
                  *, attempt: int = 0, queued: bool = False, worker: str = "w1",
                  executor: str = "w1.0", lease: float | None = None, **fields: Any) -> None:
    """A task run in ``state`` with its RQ job, counted on its flow run, in the library's
    compact layout (created 10 s before NOW); a running one is on its executor's processing
    list with a lease, started at NOW - 1 (its 'running' history entry implied by b)."""
    row = {"flow_run_id": flow_run_id, "n": "t", "queue": QUEUE, "state": state,
           "attempt": attempt, "c": CREATED_US, "reply_to": REPLY, "retries": 0, **fields}
    if state == "running":
        row.update(b=NOW_US - 1_000_000 - CREATED_US,
                   **({"w": executor} if executor.startswith(worker + ".")
                      else {"w": worker, "x": executor}))
        client.rpush(keys.processing(executor), task_run_id)
        client.zadd(keys.LEASES, {task_run_id: NOW + 30 if lease is None else lease})
        client.hincrby(keys.queue_stats(QUEUE), "running", 1)
    client.hset(keys.task_run(task_run_id), mapping=row)
    client.hset(keys.rq_job(task_run_id), mapping={"status": "queued",
                                                   "flowkit_envelope": b"head",
                                                   "flowkit_body": b"body"})
    client.rpush(keys.flow_run_tasks(flow_run_id), task_run_id)
    client.hincrby(keys.flow_run(flow_run_id), f"n_{state}", 1)
    client.hincrby(keys.flow_run(flow_run_id), "n_total", 1)
    if queued:
        client.rpush(keys.queue(QUEUE), task_run_id)


def _stream(client: Any, key: str) -> list[tuple[str, str, str]]:
    out = []
    for _, raw in client.xrange(key):
        fields = {k.decode(): v.decode("utf-8", "replace") for k, v in raw.items()}
        if key == keys.EVENTS:
            events = parse_state_events(fields)
            assert events, f"an event this version cannot read: {fields}"
            out += [(event.kind, event.id, event.state) for event in events]
        elif fields.get("kind") == "done":  # one entry for the outcomes of one call
            out += [("done", task_run_id, state.value)
                    for task_run_id, state, _, _ in replies.outcomes(raw)]
        else:
            out.append((fields.get("kind", ""), fields.get("id", ""), fields.get("state", "")))
    return out


def observe(client: Any, tasks: list[str], flows: list[str],
            executors: tuple[str, ...] = ("w1.0",), cache_keys: tuple[str, ...] = ()
            ) -> dict[str, Any]:
    """Everything a contract case may assert on, by flat name."""
    seen: dict[str, Any] = {}
    for t in tasks:
        raw = {k.decode(): v.decode() for k, v in client.hgetall(keys.task_run(t)).items()}
        # The fields as stored, then as readers see them (executor, started, ended...).
        shown = {**raw, **(task_records.fields(t, raw) if raw else {})}
        for k, v in shown.items():
            seen[f"task:{t}.{k}"] = v
        status = client.hget(keys.rq_job(t), "status")
        seen[f"job:{t}.status"] = status.decode() if status else None
        seen[f"job:{t}.ttl"] = client.pttl(keys.rq_job(t)) > 0
        record = {k.decode(): v.decode() for k, v in client.hgetall(keys.task_run(t)).items()}
        seen[f"history:{t}"] = [h["state"] for h in task_records.history(record)]
        seen[f"result:{t}"] = task_runs.read_result(client, t) is not None
    for f in flows:
        for k, v in client.hgetall(keys.flow_run(f)).items():
            seen[f"flow:{f}.{k.decode()}"] = v.decode()
        seen[f"logs:{f}"] = [fields[b"message"].decode()
                             for _, fields in client.xrange(keys.logs(f))]
        seen[f"index:{f}"] = [s.value for s in ALL_STATES
                              if client.zscore(keys.flow_runs_in_state(s.value), f) is not None]
    seen[f"queue:{QUEUE}"] = [i.decode() for i in client.lrange(keys.queue(QUEUE), 0, -1)]
    seen["queue_stats.running"] = int(client.hget(keys.queue_stats(QUEUE), "running") or 0)
    seen["leases"] = sorted(i.decode() for i in client.zrange(keys.LEASES, 0, -1))
    # Deadlines and due times are the server's now plus a duration: compare as durations.
    now = server_time(client)
    seen["lease_in"] = {i.decode(): round(score - now) for i, score in
                        client.zrange(keys.LEASES, 0, -1, withscores=True)}
    seen["retries_due"] = {i.decode(): round(score - now) for i, score in
                           client.zrange(keys.RETRIES_DUE, 0, -1, withscores=True)}
    seen["deadletter"] = [i.decode() for i in client.lrange(keys.DEAD_LETTER, 0, -1)]
    seen["cancelling"] = sorted(i.decode() for i in client.smembers(keys.CANCELLING))
    seen["events"] = _stream(client, keys.EVENTS)
    seen[f"reply:{REPLY}"] = _stream(client, REPLY)
    for executor in executors:
        seen[f"processing:{executor}"] = [i.decode() for i in
                                          client.lrange(keys.processing(executor), 0, -1)]
    for key in cache_keys:
        seen[f"cache:{key}"] = client.exists(keys.cache(key)) == 1
        lock = client.get(keys.cache_lock(key))
        seen[f"cache_lock:{key}"] = lock.decode() if lock else None
        seen[f"cache_waiters:{key}"] = [i.decode() for i in
                                        client.lrange(keys.cache_waiters(key), 0, -1)]
    return seen
