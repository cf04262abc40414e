"""Contract tests of the Lua library: each case writes fixture state into a real server,
calls one library function through the store API, and compares what it left (hashes,
counters, indexes, queues, leases, events, replies) with the table.

The three "regression" cases are the divergences the old per-script copies had: a hard
timeout that ignored retry_delay_seconds, a per-task cancel that never closed a flow run that
closes by itself, and a cache leader finished outside flowkit's executor that never wrote its
cache entry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from flowkit.states import RunState
from flowkit.store import attempts, flow_runs, functions, keys, task_runs, workers
from flowkit.store.attempts import Claim, Outcome
from flowkit.store.clock import server_time
from flowkit.store.limits import CLAIM_SKIP_MAX
from flowkit.store.task_records import time_text as _us_text
from flowkit.store.task_runs import CacheOptions, TaskRunSpec

from library_fixtures import NOW_US, QUEUE, REPLY, observe, seed_flow_run, seed_task_run

R = f"reply:{REPLY}"


@dataclass
class Case:
    """given: fixture state; when: the call (its value is checked against ``returns``);
    then: observations that must hold afterwards (see library_fixtures.observe)."""

    fn: str  #: the library function under contract
    id: str
    given: Callable[[Any], None]
    when: Callable[[Any, Any], Any]
    then: dict[str, Any]
    returns: Any = None
    tasks: list[str] = field(default_factory=lambda: ["t1", "t2"])
    flows: list[str] = field(default_factory=lambda: ["f1"])
    cache_keys: tuple[str, ...] = ()


def spec(task_run_id: str, *, held: bool = False, cache_key: str = "") -> TaskRunSpec:
    return TaskRunSpec(id=task_run_id, flow_run_id="f1", task_name="t", queue=QUEUE,
                       envelope=b"head", body=b"body", reply_to=REPLY, held=held,
                       cache_key=cache_key, cache_parts="{}" if cache_key else "")


def claimed(task_run_id: str, attempt: int = 1) -> Claim:
    return Claim(task_run_id, b"head", b"body", attempt, "f1", REPLY)


def finish(*outcomes: tuple[str, int, Outcome]) -> Callable[[Any, Any], Any]:
    return lambda c, lim: attempts.finish(c, lim, "w1", "w1.0",
                                          [(claimed(i, a), o) for i, a, o in outcomes])


def running(task_run_id: str, **fields: Any) -> Callable[[Any], None]:
    def given(c: Any) -> None:
        seed_flow_run(c, "f1")
        seed_task_run(c, task_run_id, state="running", attempt=1, **fields)
    return given


def flow_with(*tasks: tuple[str, str], **flow_fields: Any) -> Callable[[Any], None]:
    def given(c: Any) -> None:
        seed_flow_run(c, "f1", **flow_fields)
        for task_run_id, state in tasks:
            seed_task_run(c, task_run_id, state=state, attempt=1 if state != "pending" else 0,
                          queued=state == "pending")
    return given


STALE_LINE = ("stale result refused: task run t1 attempt 7 (worker w1) finished after the task "
              "run had moved on to attempt 1 (running, worker w1); its outcome was discarded "
              "(the worker was frozen or cut off past its lease)")


def heartbeat_age(c: Any, worker_id: str) -> int:
    """Seconds between the server's now and a worker's heartbeat stamp (0 when it is the
    server's clock; a host clock off by an hour would show -3600 or 3600)."""
    return round(server_time(c) - float(c.hget(f"flowkit:worker:{worker_id}", "heartbeat")))


def leader_and_waiter(c: Any) -> None:
    seed_flow_run(c, "f1")
    seed_task_run(c, "t1", state="running", attempt=1, cache_key="k1")
    seed_task_run(c, "t2", state="pending", cache_key="k1", cache_wait="1")
    c.set("flowkit:cache:k1:lock", "t1")
    c.rpush("flowkit:cache:k1:waiters", "t2")


def _refused(call: Callable[[], Any]) -> str:
    """The message of the error a call raises (the case checks it names the cause)."""
    try:
        call()
    except Exception as exc:
        return str(exc)
    raise AssertionError("the call was not refused")


CASES = [
    # -- enqueue ----------------------------------------------------------------------------
    Case("enqueue", "enqueue writes pending runs and queues the ready ones",
         lambda c: seed_flow_run(c, "f1"),
         lambda c, lim: task_runs.enqueue_task_runs(c, lim, [spec("t1"), spec("t2", held=True)]),
         {"task:t1.state": "pending", "task:t2.state": "pending", "flow:f1.n_pending": "2",
          "flow:f1.n_total": "2", f"queue:{QUEUE}": ["t1"], "job:t1.status": "queued",
          "job:t2.status": "deferred", "events": []}),
    Case("enqueue", "enqueue answers a cache hit at once, created cached",
         lambda c: (seed_flow_run(c, "f1"), c.set("flowkit:cache:k1", b"sealed")),
         lambda c, lim: task_runs.enqueue_task_runs(c, lim, [spec("t1", cache_key="k1")]),
         {"task:t1.state": "cached", "task:t1.cache_hit": "1", "flow:f1.n_cached": "1",
          "flow:f1.n_pending": "0", "flow:f1.n_total": "1", f"queue:{QUEUE}": [],
          "job:t1.status": None, "history:t1": ["cached"], "result:t1": True,
          "events": [("task", "t1", "cached")], R: [("done", "t1", "cached")]},
         cache_keys=("k1",)),
    Case("enqueue", "enqueue runs one of identical calls; the others wait for it (single flight)",
         lambda c: seed_flow_run(c, "f1"),
         lambda c, lim: task_runs.enqueue_task_runs(
             c, lim, [spec("t1", cache_key="k1"), spec("t2", cache_key="k1")],
             CacheOptions(expiration_ms=60_000)),
         {f"queue:{QUEUE}": ["t1"], "cache_lock:k1": "t1", "cache_waiters:k1": ["t2"],
          "task:t2.cache_wait": "1", "task:t1.cache_ttl_ms": "60000"},
         cache_keys=("k1",)),
    Case("enqueue", "enqueue records a call's ad-hoc run first and closes it after the call",
         lambda c: None,
         lambda c, lim: task_runs.enqueue_task_runs(
             c, lim, [spec("t1"), spec("t2", held=True)],
             adhoc=task_runs.AdhocRecord("adhoc: script.py", close=True)),
         {"flow:f1.state": "running", "flow:f1.kind": "adhoc", "flow:f1.name": "adhoc: script.py",
          "flow:f1.auto_close": "1", "flow:f1.n_pending": "2", "flow:f1.n_total": "2",
          f"queue:{QUEUE}": ["t1"], "events": [("flow", "f1", "running")]}),
    Case("enqueue", "an ad-hoc run answered wholly from the cache ends with its enqueue",
         lambda c: c.set("flowkit:cache:k1", b"sealed"),
         lambda c, lim: task_runs.enqueue_task_runs(
             c, lim, [spec("t1", cache_key="k1")],
             adhoc=task_runs.AdhocRecord("adhoc: script.py", close=True)),
         {"flow:f1.state": "completed", "task:t1.state": "cached", "flow:f1.n_cached": "1"},
         cache_keys=("k1",)),
    Case("enqueue", "enqueue into a flow run the server lost writes nothing (no ghost run)",
         lambda c: None,
         lambda c, lim: ("flow run f1 no longer exists in Redis" in _refused(
             lambda: task_runs.enqueue_task_runs(c, lim, [spec("t1")])),
             c.exists(keys.task_run("t1"), keys.flow_run("f1"), keys.rq_job("t1"))),
         {f"queue:{QUEUE}": [], "events": []},
         returns=(True, 0)),
    # -- claim ------------------------------------------------------------------------------
    Case("claim", "claim starts an attempt: running, leased, counted, in the history",
         flow_with(("t1", "pending")),
         lambda c, lim: len(attempts.claim(c, lim, "w1", "w1.0", [QUEUE], lease_seconds=30)),
         {"task:t1.state": "running", "task:t1.attempt": "1", "task:t1.worker": "w1",
          "flow:f1.n_pending": "0", "flow:f1.n_running": "1", "queue_stats.running": 1,
          # The RQ job keeps what a stock RQ worker acts on: a claimed one stays 'queued'
          # (an HSET per task less) and ends 'failed' or deleted.
          "leases": ["t1"], "job:t1.status": "queued", "history:t1": ["running"],
          "processing:w1.0": ["t1"], "events": [("task", "t1", "running")]},
         returns=1),
    Case("claim", "claim skips a run that was cancelled while queued",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "t1", state="cancelled"),
                    c.rpush(f"rq:queue:{QUEUE}", "t1")),
         lambda c, lim: len(attempts.claim(c, lim, "w1", "w1.0", [QUEUE], lease_seconds=30)),
         {"task:t1.state": "cancelled", "processing:w1.0": [], "leases": [], "events": []},
         returns=0),
    Case("claim",
         "claim leaves a body larger than the inline limit out of its reply, for a plain HGET",
         # enqueue marks such a record 'big' (the driver wrote the body with a plain HSET)
         lambda c: (flow_with(("t1", "pending"))(c), c.hset(keys.task_run("t1"), "big", "1"),
                    c.hset("rq:job:t1", "flowkit_body", b"x" * (attempts.INLINE_BODY_BYTES + 1))),
         lambda c, lim: [(x.envelope, x.body) for x in attempts.parse_claims(
             attempts.claim(c, lim, "w1", "w1.0", [QUEUE], lease_seconds=30), 0.0)],
         {"task:t1.state": "running"}, returns=[(b"head", None)]),
    # -- finish -----------------------------------------------------------------------------
    Case("finish", "finish records a result and ends the run",
         running("t1"), finish(("t1", 1, Outcome("completed", result=b"sealed"))),
         {"task:t1.state": "completed", "result:t1": True, "job:t1.status": None,
          "flow:f1.n_running": "0", "flow:f1.n_completed": "1", "queue_stats.running": 0,
          "leases": [], "processing:w1.0": [], "history:t1": ["running", "completed"],
          R: [("done", "t1", "completed")], "events": [("task", "t1", "completed")]},
         returns=[1]),
    Case("finish", "finish is fenced: a stale attempt writes nothing but one log line",
         running("t1"), finish(("t1", 7, Outcome("completed", result=b"stale"))),
         {"task:t1.state": "running", "result:t1": False, "leases": ["t1"], "events": [],
          "logs:f1": [STALE_LINE], R: [("log", "", "")]},
         returns=[0, STALE_LINE.encode()]),
    Case("finish", "a batched attempt's real start is sent as a delay after its claim (the "
                   "executor's clock may be off): started = the claim's server stamp + delay",
         running("t1"),
         lambda c, lim: attempts.finish(c, lim, "w1", "w1.0", [(
             Claim("t1", b"head", b"body", 1, "f1", REPLY, claimed_at=3600.0),
             Outcome("completed", result=b"r", started=3602.5))]),
         {"task:t1.started": _us_text(NOW_US - 1_000_000 + 2_500_000),
          "task:t1.state": "completed"},
         returns=[1]),
    Case("finish", "finish repeated after a lost reply is not reported as stale",
         running("t1"),
         lambda c, lim: [finish(("t1", 1, Outcome("completed", result=b"r")))(c, lim)
                         for _ in range(2)],
         {"task:t1.state": "completed", "logs:f1": [], R: [("done", "t1", "completed")]},
         returns=[[1], [0]]),
    Case("finish", "finish of a failure with retries left waits out the delay in retries:due",
         running("t1"),
         finish(("t1", 1, Outcome("failed", error_type="builtins.ValueError", retry_delay=5))),
         {"task:t1.state": "retrying", "flow:f1.n_retrying": "1", "flow:f1.n_running": "0",
          "retries_due": {"t1": 5}, f"queue:{QUEUE}": [], "job:t1.status": "scheduled",
          "leases": [], "history:t1": ["running", "failed"],
          "events": [("task", "t1", "retrying")], R: []}),
    Case("finish", "finish of a failure retried at once goes straight back to the queue",
         running("t1"),
         finish(("t1", 1, Outcome("failed", error_type="builtins.ValueError", retry_delay=0))),
         {"task:t1.state": "retrying", f"queue:{QUEUE}": ["t1"], "retries_due": {},
          "job:t1.status": "queued"}),
    Case("finish", "finish of a failure retried at once goes to the front, before a backlog",
         lambda c: (running("t1")(c), seed_task_run(c, "b1", queued=True)),
         finish(("t1", 1, Outcome("failed", error_type="builtins.ValueError", retry_delay=0))),
         {f"queue:{QUEUE}": ["t1", "b1"]}),
    Case("reap", "reap's crash re-run goes to the front of its queue, before a backlog",
         lambda c: (running("t1", lease=1.0)(c), seed_task_run(c, "b1", queued=True)),
         lambda c, lim: attempts.reap_expired_leases(c, lim),
         {f"queue:{QUEUE}": ["t1", "b1"]}, returns=["t1"]),
    Case("finish", "finish of a final failure keeps the RQ job (expiring) for a dashboard retry",
         running("t1"),
         finish(("t1", 1, Outcome("failed", error_type="builtins.ValueError",
                                  error_message="bad", traceback="tb"))),
         {"task:t1.state": "failed", "task:t1.error_type": "builtins.ValueError",
          "task:t1.error_message": "bad", "flow:f1.n_failed": "1", "job:t1.status": "failed",
          "job:t1.ttl": True, R: [("done", "t1", "failed")]}),
    Case("finish", "finish of a cache leader stores its result and answers the waiting call",
         leader_and_waiter, finish(("t1", 1, Outcome("completed", result=b"sealed"))),
         {"task:t1.state": "completed", "task:t2.state": "cached", "cache:k1": True,
          "cache_lock:k1": None, "cache_waiters:k1": [], "result:t2": True,
          "flow:f1.n_cached": "1", "flow:f1.n_pending": "0", "history:t2": ["cached"],
          R: [("done", "t1", "completed"), ("done", "t2", "cached")]},
         cache_keys=("k1",)),
    Case("finish", "finish of a failed cache leader hands the key to the first waiting call",
         leader_and_waiter, finish(("t1", 1, Outcome("failed", error_type="builtins.OSError"))),
         {"task:t1.state": "failed", "task:t2.state": "pending", "cache_lock:k1": "t2",
          "cache_waiters:k1": [], f"queue:{QUEUE}": ["t2"], "cache:k1": False},
         cache_keys=("k1",)),
    # -- give back, renew -------------------------------------------------------------------
    Case("release",
         "release gives an unstarted claim back to the front of its queue, as if never claimed",
         running("t1"), lambda c, lim: attempts.release(c, lim, "w1", "w1.0", ["t1"]),
         {"task:t1.state": "pending", "task:t1.attempt": "0", "history:t1": [],
          f"queue:{QUEUE}": ["t1"], "leases": [], "flow:f1.n_running": "0",
          "flow:f1.n_pending": "1", "queue_stats.running": 0, "processing:w1.0": []},
         returns=1),
    Case("renew", "renew takes a duration: the new deadline is the server's now plus it",
         running("t1", lease=1.0),
         lambda c, lim: attempts.renew_leases(c, lim, "w1", ["t1"], 30, running=["t1"]),
         {"lease_in": {"t1": 30}}, returns=1),
    Case("renew", "time is the server's: a caller's clock in ARGV[1] is ignored",
         running("t1", lease=1.0),
         lambda c, lim: c.fcall(functions.library().prefix + "renew", 0, "1.0",
                                lim.result_ttl_ms, lim.inline_bytes, lim.max_crashes,
                                "w1", 30, 1, "t1"),
         {"lease_in": {"t1": 30}}, returns=1),
    Case("heartbeat", "heartbeat is stamped with the server's TIME, in the registry and queues",
         lambda c: None,
         lambda c, lim: (workers.register_worker(c, "w9", [QUEUE], 2, "x"),
                         heartbeat_age(c, "w9"), workers.live_workers_for(c, QUEUE))[1:],
         {}, returns=(0, 1), tasks=[], flows=[]),
    Case("renew", "renew extends the leases of this worker's running attempts only",
         lambda c: (seed_flow_run(c, "f1"),
                    seed_task_run(c, "t1", state="running", attempt=1, lease=1.0),
                    seed_task_run(c, "t2", state="running", attempt=1, worker="w2", lease=1.0)),
         lambda c, lim: attempts.renew_leases(c, lim, "w1", ["t1", "t2"], 30, running=["t1"]),
         {"task:t1.in_hand": "1", "leases": ["t1", "t2"]}, returns=1),
    # -- reap -------------------------------------------------------------------------------
    Case("reap", "reap crashes an expired lease and retries at once",
         running("t1", lease=1.0),
         lambda c, lim: attempts.reap_expired_leases(c, lim),
         {"task:t1.state": "retrying", "task:t1.crashes": "1", f"queue:{QUEUE}": ["t1"],
          "leases": [], "history:t1": ["running", "crashed"],
          "task:t1.error_type": "flowkit.errors.WorkerCrashed"}, returns=["t1"]),
    Case("reap", "reap dead-letters a run that crashed its executor max_crashes times",
         running("t1", lease=1.0, crashes=2),
         lambda c, lim: attempts.reap_expired_leases(c, lim),
         {"task:t1.state": "crashed", "deadletter": ["t1"], "flow:f1.n_crashed": "1",
          R: [("done", "t1", "crashed")]}),
    Case("reap", "reap of a whole dead worker crashes only the attempt in hand",
         lambda c: (seed_flow_run(c, "f1"),
                    seed_task_run(c, "t1", state="running", attempt=1, lease=1.0, in_hand="1"),
                    seed_task_run(c, "t2", state="running", attempt=1, lease=1.0)),
         lambda c, lim: sorted(attempts.reap_expired_leases(c, lim)),
         {"task:t1.state": "retrying", "task:t2.state": "pending", "task:t2.attempt": "0",
          "history:t2": ["pending"], f"queue:{QUEUE}": ["t2", "t1"], "processing:w1.0": [],
          "flow:f1.n_running": "0"}, returns=["t1", "t2"]),
    Case("reap", "regression: a hard timeout retries after the task's retry delay, not at once",
         running("t1", retries=1),
         lambda c, lim: attempts.end_unreported(c, lim, "timed_out", "killed", ["t1"],
                                                retry_delay=7),
         {"task:t1.state": "retrying", "retries_due": {"t1": 7}, f"queue:{QUEUE}": [],
          "task:t1.error_type": "flowkit.errors.TaskTimeout"}),
    Case("reap", "a hard timeout the executor decided not to retry ends TIMED_OUT",
         running("t1", retries=1),
         lambda c, lim: attempts.end_unreported(c, lim, "timed_out", "killed", ["t1"],
                                                retry_delay=-1),
         {"task:t1.state": "timed_out", "flow:f1.n_timed_out": "1", "job:t1.status": "failed"}),
    Case("reap", "a running attempt killed for its cancellation ends CANCELLED and closes its run",
         lambda c: (seed_flow_run(c, "f1", auto_close="1"),
                    seed_task_run(c, "t1", state="running", attempt=1)),
         lambda c, lim: attempts.end_unreported(c, lim, "cancelled", "stopped", ["t1"]),
         {"task:t1.state": "cancelled", "job:t1.status": None, "flow:f1.state": "cancelled",
          "index:f1": ["cancelled"]}),
    Case("promote", "promote puts due retries at the front of their queue, earliest due first",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "t1", state="retrying"),
                    seed_task_run(c, "t2", state="retrying"),
                    seed_task_run(c, "b1", queued=True), seed_task_run(c, "b2", queued=True),
                    c.zadd("flowkit:retries:due", {"t1": 1.0, "t2": 2.0})),
         lambda c, lim: attempts.promote_due_retries(c, lim),
         {f"queue:{QUEUE}": ["t1", "t2", "b1", "b2"]}, returns=2),
    Case("promote", "promote queues the retries that are due and leaves the others",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "t1", state="retrying"),
                    seed_task_run(c, "t2", state="retrying"),
                    c.zadd("flowkit:retries:due", {"t1": 1.0, "t2": time.time() + 3600})),
         lambda c, lim: attempts.promote_due_retries(c, lim),
         {f"queue:{QUEUE}": ["t1"], "retries_due": {"t2": 3600},
          "job:t1.status": "queued"}, returns=1),
    # -- cancel, retry, release, fail -------------------------------------------------------
    Case("cancel",
         "regression: cancelling the last task run of a run that closes by itself closes it",
         flow_with(("t1", "completed"), ("t2", "pending"), auto_close="1"),
         lambda c, lim: task_runs.cancel(c, lim, task_run_ids=["t2"], message="no"),
         {"task:t2.state": "cancelled", "flow:f1.state": "cancelled", "index:f1": ["cancelled"],
          f"queue:{QUEUE}": [], "job:t2.status": None, "flow:f1.n_pending": "0",
          R: [("done", "t2", "cancelled")]}, returns=(1, 0)),
    Case("cancel",
         "cancelling a flow run ends it first, then its queued runs, and flags running ones",
         flow_with(("t1", "running"), ("t2", "pending")),
         lambda c, lim: task_runs.cancel(c, lim, flow_run_id="f1", message="stop"),
         {"flow:f1.state": "cancelled", "task:t2.state": "cancelled", "task:t1.state": "running",
          "cancelling": ["t1"], "flow:f1.error_type": "flowkit.errors.CancelledRun",
          R: [("cancel_flow", "f1", ""), ("done", "t2", "cancelled")]}, returns=(1, 1)),
    Case("cancel", "cancelling a big flow run goes in bounded chunks and sweeps its queue",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "x1", queued=True),
                    [seed_task_run(c, f"t{i}", queued=True) for i in range(1200)],
                    seed_task_run(c, "x2", flow_run_id="f2", queued=True)),
         lambda c, lim: task_runs.cancel(c, lim, flow_run_id="f1", message="stop"),
         {"flow:f1.state": "cancelled", "flow:f1.n_cancelled": "1201", "flow:f1.n_pending": "0",
          "task:t1199.state": "cancelled", f"queue:{QUEUE}": ["x2"]},
         returns=(1201, 0), tasks=["t1199"]),
    Case("sweep", "sweep removes ended ids from a stretch of a queue and keeps the others' order",
         lambda c: (seed_flow_run(c, "f1"),
                    [seed_task_run(c, f"t{i}", state="cancelled" if i % 2 else "pending",
                                   queued=True) for i in range(6)],
                    c.rpush(f"rq:queue:{QUEUE}", "not-a-task-run")),
         lambda c, lim: functions.call(c, "sweep", lim, [QUEUE, 1, 4]),
         {f"queue:{QUEUE}": ["t0", "t2", "t4", "t5", "not-a-task-run"]},
         returns=[3, 4, 2], tasks=[]),
    Case("claim", "claim drops at most CLAIM_SKIP_MAX ended ids per call, then rings the bell",
         lambda c: (seed_flow_run(c, "f1"),
                    c.rpush(f"rq:queue:{QUEUE}", *[f"gone{i}" for i in range(CLAIM_SKIP_MAX)]),
                    seed_task_run(c, "t1", queued=True)),
         lambda c, lim: (len(attempts.claim(c, lim, "w1", "w1.0", [QUEUE], lease_seconds=30)),
                         c.llen(f"flowkit:bell:{QUEUE}") > 0,
                         len(attempts.claim(c, lim, "w1", "w1.0", [QUEUE], lease_seconds=30))),
         {f"queue:{QUEUE}": [], "task:t1.state": "running", "processing:w1.0": ["t1"]},
         returns=(0, True, 1)),
    Case("retry", "retry sends failed runs back to the queue and reopens an ended flow run",
         flow_with(("t1", "failed"), ("t2", "completed"), state="failed"),
         lambda c, lim: task_runs.retry(c, lim, "f1"),
         {"task:t1.state": "pending", "task:t1.crashes": "0", f"queue:{QUEUE}": ["t1"],
          "flow:f1.state": "running", "flow:f1.auto_close": "1", "index:f1": ["running"],
          "flow:f1.n_failed": "0", "flow:f1.n_pending": "1"}, returns=(1, 0)),
    Case("release_held", "release_held queues held runs still pending, not cancelled ones",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "t1"),
                    seed_task_run(c, "t2", state="cancelled")),
         lambda c, lim: task_runs.release_held(c, lim, ["t1", "t2"]),
         {f"queue:{QUEUE}": ["t1"], "job:t1.status": "queued"}, returns=1),
    Case("fail_unstarted", "fail_unstarted ends held runs FAILED and drops their RQ jobs",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "t1")),
         lambda c, lim: task_runs.fail_unstarted(c, lim, [("t1", "upstream failed")],
                                                 RunState.FAILED, "flowkit.errors.UpstreamFailed"),
         {"task:t1.state": "failed", "task:t1.error_message": "upstream failed",
          "job:t1.status": None, "flow:f1.n_failed": "1", R: [("done", "t1", "failed")]},
         returns=1),
    Case("fail_unstarted",
         "the state table refuses what states.py does not allow (pending -> completed)",
         lambda c: (seed_flow_run(c, "f1"), seed_task_run(c, "t1")),
         lambda c, lim: task_runs.fail_unstarted(c, lim, [("t1", "?")], RunState.COMPLETED, "x"),
         {"task:t1.state": "pending", "flow:f1.n_pending": "1", "events": [], R: []},
         returns=0),
    # -- flow runs --------------------------------------------------------------------------
    Case("flow_run_create", "flow_run_create records and indexes a run once",
         lambda c: None,
         lambda c, lim: [flow_runs.create_flow_run(c, lim, "f1", "etl") for _ in range(2)],
         {"flow:f1.state": "running", "flow:f1.name": "etl", "flow:f1.n_pending": "0",
          "index:f1": ["running"], "events": [("flow", "f1", "running")]},
         returns=[True, False]),
    Case("flow_run_move",
         "flow_run_move moves state and index, and refuses to leave a terminal state",
         lambda c: seed_flow_run(c, "f1"),
         lambda c, lim: [flow_runs.transition_flow_run(c, lim, "f1", RunState.COMPLETED,
                                                       result_preview="42"),
                         flow_runs.transition_flow_run(c, lim, "f1", RunState.FAILED)],
         {"flow:f1.state": "completed", "flow:f1.result": "42", "index:f1": ["completed"],
          "events": [("flow", "f1", "completed")]}, returns=[RunState.RUNNING, None]),
    Case("flow_run_close",
         "flow_run_close with work still to come leaves the run to close by itself",
         flow_with(("t1", "pending")),
         lambda c, lim: flow_runs.close_flow_run(c, lim, "f1"),
         {"flow:f1.state": "running", "flow:f1.auto_close": "1"}, returns=RunState.RUNNING),
    Case("flow_run_close", "flow_run_close with nothing left ends the run from its task counts",
         flow_with(("t1", "completed"), ("t2", "failed")),
         lambda c, lim: flow_runs.close_flow_run(c, lim, "f1"),
         {"flow:f1.state": "failed", "flow:f1.auto_close": "0", "index:f1": ["failed"]},
         returns=RunState.FAILED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_library_contract(case: Case, client: Any, limits: Any) -> None:
    case.given(client)
    got = case.when(client, limits)
    if case.returns is not None:
        assert got == case.returns
    seen = observe(client, case.tasks, case.flows, cache_keys=case.cache_keys)
    wrong = {name: {"expected": want, "found": seen.get(name, "<absent>")}
             for name, want in case.then.items() if seen.get(name, "<absent>") != want}
    assert not wrong, wrong


def test_every_library_function_but_prune_has_a_contract_case() -> None:
    """prune has its own tests (test_retention.py) over real flow runs, prune_preview too
    (test_prune_preview.py)."""
    import re

    from test_drivers_library import DRIVER_CASE_FUNCTIONS

    registered = set(re.findall(r"register\('([a-z_]+)'", functions.library().source))
    unchecked = registered - {c.fn for c in CASES} - DRIVER_CASE_FUNCTIONS
    assert unchecked == {"prune", "prune_preview"}


def test_no_library_file_spells_a_key_or_a_state_table() -> None:
    """Keys come from keys.py (K) and the state table from states.py (S), generated into the
    library's prelude: a Lua file that spelled either would drift from them unseen."""
    import re
    from importlib import resources

    folder = resources.files("flowkit.store.library")
    for name in functions.FILES:
        text = folder.joinpath(f"{name}.lua").read_text()
        assert not re.search(r"""['"](flowkit|rq):[a-z]""", text), name
        assert "terminal = {" not in text.lower(), name
    prelude = functions.prelude()
    assert "K.task_run = function(id) return \"flowkit:taskrun:\" .. id end" in prelude
    assert '["running"] = {' in prelude  # ALLOWED, generated from states.ALLOWED
