"""Correctness of the batched paths (issue 9): executors claim several task runs per call and
record several outcomes per call, so a crash can land mid-batch. A crash mid-batch loses
nothing and duplicates no recorded result: every task run ends once, with the right result,
its history and its flow run's counters say so exactly once, and nothing stays claimed.

The batches are real: fast tasks first teach the executor's BatchPolicy to claim several at
a time, then one body (``batch_helpers.logged``) blocks only once it sees its executor
holding unstarted claims behind it, so the kill or cancel lands mid-batch by construction.
Re-running a crashed or unrecorded attempt is allowed (at least once); recording a second
outcome is not. Run state is read through the store API (task_runs, flow_runs, stats,
attempts); only the leftovers check counts the queue, lease, cancel and retry keys named in
store/keys.py, which have no reader there.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import redis

import flowkit
from batch_helpers import (
    EXECUTOR,
    TERMINAL,
    WORKER,
    assert_nothing_left,
    attempts_of,
    blocked,
    by_kind,
    check_history,
    claim_here,
    executions,
    executor_ids,
    flow_counts,
    logged,
    queue_totals,
    refusals,
    result_of,
    run_here,
)
from flowkit import flow, unmapped
from flowkit.errors import CancelledRun
from flowkit.states import RunState
from flowkit.store import attempts, flow_runs, functions, task_runs
from flowkit.store.workers import list_workers

from conftest import TEST_SECRET, WorkerProcesses, alive, children, wait_until
from tasks_for_tests import identity

FAST_LEASES = {"FLOWKIT_LEASE_SECONDS": "2", "FLOWKIT_HEARTBEAT_SECONDS": "0.5"}
#: Fast task runs that teach a fresh executor to claim in batches.
WARM_UP = 200
#: Task runs of the map under test (the first few never block).
MAPPED = 60
FIRST_CANDIDATE = 12


def _unique(name: str) -> str:
    """A worker name no other test session on this host uses: a worker's executor slots are
    files named after it in /dev/shm, shared by every worker of that name on the host."""
    return f"{name}-{os.getpid()}"


def _state(client: redis.Redis, task_run_id: str) -> str:
    return (task_runs.get_task_state(client, task_run_id) or RunState.PENDING).value


def _warm_up() -> None:
    """Fast task runs, so the executors batch."""
    futures = identity.map(range(WARM_UP))
    assert [f.result(timeout=30) for f in futures] == list(range(WARM_UP))


def _flow_run_of(client: redis.Redis, futures: list[Any]) -> str:
    """The flow run the futures' task runs belong to (a map outside a flow has its own)."""
    record = task_runs.get_task_run(client, futures[0].task_run_id)
    assert record is not None
    return record["flow_run_id"]


def _map(tmp_path: Path, blockers: int = 1) -> tuple[list[Any], Path, Path]:
    """The map under test: ``logged`` over 0..MAPPED-1, the later ones able to block."""
    calls, block_dir = tmp_path / "calls", tmp_path / "block"
    block_dir.mkdir()
    blocks = ["" if x < FIRST_CANDIDATE else str(block_dir) for x in range(MAPPED)]
    futures = logged.map(unmapped(str(calls)), range(MAPPED), block_dir=blocks,
                         blockers=unmapped(blockers))
    return futures, calls, block_dir


def _mid_batch(client: redis.Redis, futures: list[Any], block_dir: Path
               ) -> tuple[str, int, list[str]]:
    """Wait until a body blocks mid-batch; returns its task run id, its executor's pid and
    its executor's processing list (claimed, not yet recorded), asserting the batch is real:
    some of the map recorded, the blocker running, some claimed behind it."""
    [found] = wait_until(lambda: blocked(block_dir), timeout=30, message="a body to block")
    return _check_mid_batch(client, futures, *found)


def _check_mid_batch(client: redis.Redis, futures: list[Any], task_run_id: str, pid: int
                     ) -> tuple[str, int, list[str]]:
    """Assert that a blocked body is mid-batch (see _mid_batch)."""
    record = task_runs.get_task_run(client, task_run_id)
    assert record is not None and record["state"] == "running"
    held = attempts.processing(client, [record["executor"]])
    behind = held[held.index(task_run_id) + 1:]
    assert behind, held
    assert all(_state(client, i) == "running" for i in behind)
    ids = {f.task_run_id for f in futures}
    assert set(held) <= ids, "the executor holds only task runs of the map"
    wait_until(lambda: any(_state(client, f.task_run_id) == "completed" for f in futures),
               timeout=10, message="some of the map recorded")
    return task_run_id, pid, held


def _recorded(client: redis.Redis, futures: list[Any]) -> dict[str, int]:
    """The map's task runs recorded COMPLETED now, with their input."""
    return {f.task_run_id: x for x, f in enumerate(futures)
            if _state(client, f.task_run_id) == "completed"}


def _assert_settled(client: redis.Redis, futures: list[Any], calls: Path,
                    recorded_at_kill: dict[str, int], rerun_allowed: set[str],
                    crash_allowed: set[str], blocked: str) -> dict[str, list[Any]]:
    """The checks shared by the kill tests; returns each task run's history."""
    # (a) every task run COMPLETED with the right result
    assert [f.result(timeout=30) for f in futures] == [result_of(x) for x in range(MAPPED)]
    assert all(_state(client, f.task_run_id) == "completed" for f in futures)
    # (b) exactly one 'completed' entry each, attempt numbers consistent
    histories = {f.task_run_id: check_history(client, f.task_run_id) for f in futures}
    crashed = {i for i, h in histories.items() if any(e["state"] == "crashed" for e in h)}
    assert blocked in crashed and crashed <= crash_allowed, (crashed, crash_allowed,
                                                           histories[blocked])
    assert attempts_of(histories[blocked]).count(("crashed", 1)) == 1, histories[blocked]
    # (d) a body ran twice only if its attempt crashed or its outcome was not yet recorded;
    # nothing recorded before the kill ran again
    ran = executions(calls)
    assert set(ran) == set(range(MAPPED)), sorted(set(range(MAPPED)) - set(ran))
    twice = {f.task_run_id for x, f in enumerate(futures) if ran[x] > 1}
    assert all(n <= 2 for n in ran.values()), ran
    assert twice <= rerun_allowed, (twice, rerun_allowed)
    assert not twice & set(recorded_at_kill), twice & set(recorded_at_kill)
    assert blocked in twice
    return histories


def _assert_counters(client: redis.Redis, futures: list[Any]) -> None:
    """(c) the flow run's counters equal its task runs, all completed; the queue's running
    counter is back to 0 and its done counter counted each task run (warm-up ones too) once."""
    flow_run_id = _flow_run_of(client, futures)
    assert len(task_runs.flow_task_run_ids(client, flow_run_id)) == len(futures)
    counts = flow_counts(client, flow_run_id)
    assert counts == {"completed": len(futures)}, counts
    running, done, failed = queue_totals(client)
    assert (running, done, failed) == (0, WARM_UP + len(futures), 0)


@pytest.mark.slow
def test_sigkill_of_an_executor_mid_batch_loses_nothing(workers: WorkerProcesses,
                                                        client: redis.Redis,
                                                        tmp_path: Path) -> None:
    proc = workers.start("default", concurrency=1, name=_unique("w1"))
    workers.wait_registered(client)
    _warm_up()
    futures, calls, block_dir = _map(tmp_path)
    blocked, pid, held = _mid_batch(client, futures, block_dir)
    assert pid in children(proc.pid)
    recorded = _recorded(client, futures)
    assert recorded and blocked not in recorded and not set(held) & set(recorded)
    os.kill(pid, signal.SIGKILL)  # the executor only; its supervisor recovers its claims
    wait_until(lambda: not alive(pid), timeout=5, message="the executor to die")
    (block_dir / "go").touch()  # nothing to release now; a re-run must not block anyway
    # Only the running attempt crashed; what was claimed behind it, or finished and not yet
    # recorded, went back to the queue untouched.
    histories = _assert_settled(client, futures, calls, recorded, rerun_allowed=set(held),
                                crash_allowed={blocked}, blocked=blocked)
    assert attempts_of(histories[blocked]) == [("running", 1), ("crashed", 1), ("running", 2),
                                               ("completed", 2)]
    assert "SIGKILL" in histories[blocked][1].get("message", "")
    for task_run_id in set(held) - {blocked}:
        assert attempts_of(histories[task_run_id]) == [("running", 1), ("completed", 1)]
    _assert_counters(client, futures)
    [row] = list_workers(client)
    assert int(row["tasks_done"]) == WARM_UP + MAPPED  # each outcome counted once
    assert_nothing_left(client, executor_ids(client, [f.task_run_id for f in futures]))
    assert proc.poll() is None


@pytest.mark.slow
def test_sigkill_of_a_whole_worker_mid_batch_loses_nothing(workers: WorkerProcesses,
                                                           client: redis.Redis,
                                                           tmp_path: Path) -> None:
    procs = {name: workers.start("default", concurrency=1, env=FAST_LEASES, name=name)
             for name in (_unique("w1"), _unique("w2"))}
    workers.wait_registered(client, count=2)
    _warm_up()
    futures, calls, block_dir = _map(tmp_path)
    blocked, pid, held = _mid_batch(client, futures, block_dir)
    record = task_runs.get_task_run(client, blocked)
    assert record is not None
    doomed_name = record["worker"]
    doomed = procs[doomed_name]
    survivor_name = next(n for n in procs if n != doomed_name)
    survivor = procs[survivor_name]
    # The supervisor's lease renewal marks the running attempt in hand: only it counts as
    # a crash when the whole worker dies (see reap.lua).
    def renewed() -> bool:
        now = task_runs.get_task_run(client, blocked) or {}
        return now.get("in_hand") == record["attempt"] or bool(seen.append(now))

    seen: list[dict[str, str]] = []
    try:
        wait_until(renewed, timeout=10, message="a lease renewal of the blocker")
    except AssertionError:
        raise AssertionError(f"no renewal marked the blocker in hand: {seen[-1]}") from None
    held = attempts.processing(client, [record["executor"]])
    recorded = _recorded(client, futures)
    assert recorded and blocked not in recorded and not set(held) & set(recorded)
    os.killpg(doomed.pid, signal.SIGKILL)  # supervisor and, with it, its executor
    doomed.wait(timeout=5)
    wait_until(lambda: not alive(pid), timeout=5, message="the executor to die with it")
    (block_dir / "go").touch()
    # The reaper gives back what was only claimed; the head of the dead executor's list may
    # count as the running one (it cannot tell it from the blocker when both are running).
    histories = _assert_settled(client, futures, calls, recorded, rerun_allowed=set(held),
                                crash_allowed={blocked, held[0]}, blocked=blocked)
    assert attempts_of(histories[blocked]) == [("running", 1), ("crashed", 1), ("running", 2),
                                               ("completed", 2)]
    assert "stopped renewing its lease" in histories[blocked][1].get("message", "")
    for task_run_id in set(held) - {blocked, held[0]}:
        states = [h["state"] for h in histories[task_run_id]]
        assert states == ["pending", "running", "completed"], histories[task_run_id]
        assert "died before starting it" in histories[task_run_id][0].get("message", "")
    assert all(histories[i][-1].get("worker") == survivor_name
               for i in held), "the survivor ran everything the dead worker held"
    _assert_counters(client, futures)
    assert_nothing_left(client, executor_ids(client, [f.task_run_id for f in futures]))
    assert survivor.poll() is None


# -- finish, called through the store API on real claims -------------------------------------
def test_a_repeated_finish_records_once_and_logs_no_refusal(client: redis.Redis,
                                                            limits: Any) -> None:
    """The executor repeats a finish whose reply it lost (redis-py retries a pipeline after a
    connection error; the executor retries its record loop): the repeat is no news."""
    futures = identity.map(["a", "b", "c"])  # no worker: they wait for our claim
    flow_run_id = _flow_run_of(client, futures)
    outcomes = run_here(client, claim_here(client, limits, 3), TEST_SECRET)
    assert sorted(c.id for c, _ in outcomes) == sorted(f.task_run_id for f in futures)
    assert all(o.state == "completed" for _, o in outcomes)

    first = attempts.finish(client, limits, WORKER, EXECUTOR, outcomes)
    assert int(first[0]) == 3 and attempts.log_refused(first) == 0
    before = ({f.task_run_id: task_runs.get_history(client, f.task_run_id) for f in futures},
              flow_counts(client, flow_run_id), queue_totals(client))
    repeat = attempts.finish(client, limits, WORKER, EXECUTOR, outcomes)
    assert int(repeat[0]) == 0, "the repeat recorded nothing"
    assert attempts.log_refused(repeat) == 0, repeat
    after = ({f.task_run_id: task_runs.get_history(client, f.task_run_id) for f in futures},
             flow_counts(client, flow_run_id), queue_totals(client))
    assert after == before
    assert before[1] == {"completed": 3} and before[2] == (0, 3, 0)
    for f in futures:
        check_history(client, f.task_run_id)
    assert [f.result(timeout=10) for f in futures] == ["a", "b", "c"]
    assert refusals(client, flow_run_id) == []

    # The control: a really stale outcome (an attempt the run never had) is refused, out
    # loud, once; so the silence above is the repeat being recognised, not a mute fence.
    stale = [(replace(outcomes[0][0], attempt=outcomes[0][0].attempt + 1), outcomes[0][1])]
    refused = attempts.finish(client, limits, WORKER, EXECUTOR, stale)
    assert int(refused[0]) == 0 and attempts.log_refused(refused) == 1
    [line] = refusals(client, flow_run_id)
    assert f"task run {outcomes[0][0].id} attempt 2" in line
    assert (flow_counts(client, flow_run_id), queue_totals(client)) == before[1:]


def test_a_repeated_finish_and_claim_round_trip_strands_nothing(client: redis.Redis,
                                                               limits: Any) -> None:
    futures = identity.map(list(range(6)))
    done = run_here(client, claim_here(client, limits, 2), TEST_SECRET)

    token = attempts.new_claim_token()  # made once per round trip, as the executor does

    def build(pipe: Any) -> None:  # what the executor's _record sends: outcomes, then a claim
        attempts.finish(client, limits, WORKER, EXECUTOR, done, pipe=pipe)
        attempts.claim(client, limits, WORKER, EXECUTOR, ["default"], lease_seconds=30,
                       limit=2, pipe=pipe, token=token)

    functions.execute(client, build)  # the server ran it; the reply never arrived
    replies = functions.execute(client, build)  # so the same round trip goes again
    assert int(replies[0][0]) == 0 and attempts.log_refused(replies[0]) == 0
    assert flow_counts(client, _flow_run_of(client, futures)).get("completed") == 2
    known = {c.id for c in attempts.parse_claims(replies[-1], time.time())}
    stranded = [i for i in attempts.processing(client, [EXECUTOR]) if i not in known]
    assert stranded == [], f"claimed, running, and unknown to their executor: {stranded}"


def test_one_finish_call_records_mixed_outcomes_exactly(client: redis.Redis,
                                                        limits: Any) -> None:
    futures = by_kind.map(["ok", "retry", "terminal"])
    ok, retry, terminal = (f.task_run_id for f in futures)
    flow_run_id = _flow_run_of(client, futures)
    outcomes = run_here(client, claim_here(client, limits, 3), TEST_SECRET)
    assert [o.state for _, o in outcomes] == ["completed", "failed", "failed"]
    assert [o.retry_delay for _, o in outcomes] == [None, 0.0, None]

    reply = attempts.finish(client, limits, WORKER, EXECUTOR, outcomes)  # one call, all three
    assert int(reply[0]) == 3 and attempts.log_refused(reply) == 0
    assert {i: _state(client, i) for i in (ok, retry, terminal)} == {
        ok: "completed", retry: "retrying", terminal: "failed"}
    assert flow_counts(client, flow_run_id) == {"completed": 1, "retrying": 1, "failed": 1}
    assert queue_totals(client) == (0, 1, 1)  # the retried attempt is neither done nor failed
    assert attempts_of(check_history(client, ok)) == [("running", 1), ("completed", 1)]
    assert attempts_of(check_history(client, terminal, end="failed")) == [("running", 1),
                                                                           ("failed", 1)]
    retried = task_runs.get_history(client, retry)
    assert attempts_of(retried) == [("running", 1), ("failed", 1)]
    assert retried[-1].get("retry_in") == 0

    # The retry is queued again at once: its second attempt completes.
    second = run_here(client, claim_here(client, limits, 3), TEST_SECRET)
    assert [(c.id, c.attempt) for c, _ in second] == [(retry, 2)]
    assert int(attempts.finish(client, limits, WORKER, EXECUTOR, second)[0]) == 1
    assert attempts_of(check_history(client, retry)) == [
        ("running", 1), ("failed", 1), ("running", 2), ("completed", 2)]
    assert flow_counts(client, flow_run_id) == {"completed": 2, "failed": 1}
    assert queue_totals(client) == (0, 2, 1)
    assert futures[0].result(timeout=10) == "ok" and futures[1].result(timeout=10) == "retry"
    assert "fails for good" in str(futures[2].exception(timeout=10))
    assert_nothing_left(client, {EXECUTOR})


@pytest.mark.slow
def test_batches_of_mixed_outcomes_on_a_real_worker(workers: WorkerProcesses,
                                                    client: redis.Redis) -> None:
    """The same mix through a warmed executor, which records it in shared finish calls."""
    workers.start("default", concurrency=1)
    workers.wait_registered(client)
    _warm_up()
    kinds = ["ok", "retry", "terminal"] * 20
    futures = by_kind.map(kinds)
    for f in futures:
        f.wait(timeout=60)
    flow_run_id = _flow_run_of(client, futures)
    assert flow_counts(client, flow_run_id) == {"completed": 40, "failed": 20}
    assert queue_totals(client) == (0, WARM_UP + 40, 20)
    expected = {"ok": [("running", 1), ("completed", 1)],
                "retry": [("running", 1), ("failed", 1), ("running", 2), ("completed", 2)],
                "terminal": [("running", 1), ("failed", 1)]}
    for kind, f in zip(kinds, futures):
        end = "failed" if kind == "terminal" else "completed"
        assert attempts_of(check_history(client, f.task_run_id, end=end)) == expected[kind]
        if kind != "terminal":
            assert f.result(timeout=1) == kind
    assert_nothing_left(client, executor_ids(client, [f.task_run_id for f in futures]))


# -- cancel mid-batch --------------------------------------------------------------------------
@dataclass
class CancelledMidBatch:
    """What a flow run cancelled while both executors held batches left behind."""

    futures: list[Any]
    calls: Path
    #: (blocked task run id, its executor's pid, that executor's processing list) each
    holding: list[tuple[str, int, list[str]]]
    #: Bodies that had started when the cancel returned
    ran_before: Counter[int]
    #: Task runs recorded COMPLETED when the cancel was sent
    recorded: dict[str, int]
    flow_run_id: str
    #: The cancel's counts: (dropped from queues, running attempts being stopped)
    counts: tuple[int, int]


def _cancel_mid_batch(workers: WorkerProcesses, client: redis.Redis,
                      tmp_path: Path) -> CancelledMidBatch:
    """Run a flow whose map blocks one body per executor mid-batch, cancel the flow run
    (flowkit.cancel_flow_run), and wait for its driver to stop and every task run to end."""
    workers.start("default", concurrency=2)
    workers.wait_registered(client)
    _warm_up()
    mapped: dict[str, Any] = {}
    outcome: dict[str, BaseException] = {}

    @flow
    def batched_map() -> list[int]:
        mapped["futures"], mapped["calls"], mapped["block_dir"] = _map(tmp_path, blockers=2)
        return [f.result() for f in mapped["futures"]]

    def drive() -> None:
        try:
            batched_map()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome["error"] = exc

    thread = threading.Thread(target=drive)
    thread.start()
    try:
        wait_until(lambda: "futures" in mapped, timeout=10, message="the map")
        futures, calls, block_dir = mapped["futures"], mapped["calls"], mapped["block_dir"]
        both = wait_until(lambda: len(blocked(block_dir)) == 2 and blocked(block_dir),
                          timeout=30, message="both executors blocked mid-batch")
        holding = [_check_mid_batch(client, futures, *b) for b in both]
        flow_run_id = _flow_run_of(client, futures)
        ran_before, recorded = executions(calls), _recorded(client, futures)
        counts = flowkit.cancel_flow_run(flow_run_id)
    finally:
        thread.join(timeout=20)
    assert not thread.is_alive() and isinstance(outcome.get("error"), CancelledRun), outcome
    ids = [f.task_run_id for f in futures]
    wait_until(lambda: all(_state(client, i) in TERMINAL for i in ids), timeout=30,
               message="every task run to end")
    return CancelledMidBatch(futures, calls, holding, ran_before, recorded, flow_run_id, counts)


@pytest.mark.slow
def test_cancelling_a_flow_run_mid_batch_ends_every_task_run(workers: WorkerProcesses,
                                                             client: redis.Redis,
                                                             tmp_path: Path) -> None:
    run = _cancel_mid_batch(workers, client, tmp_path)
    ids = [f.task_run_id for f in run.futures]
    states = Counter(_state(client, i) for i in ids)
    for task_run_id, _, _ in run.holding:  # the blocked bodies were killed
        assert _state(client, task_run_id) == "cancelled"
    behind = {i for tr, _, held in run.holding for i in held[held.index(tr) + 1:]}
    assert run.counts[1] >= 2 + len(behind), run.counts  # blocked and claimed: being stopped
    assert set(states) <= {"completed", "cancelled"}, states
    row = flow_runs.get_flow_run(client, run.flow_run_id)
    assert row is not None and row["state"] == "cancelled"
    assert flow_counts(client, run.flow_run_id) == dict(states)
    for i in ids:
        check_history(client, i, end=_state(client, i))
    running, done, _ = queue_totals(client)
    assert (running, done) == (0, WARM_UP + states["completed"])
    # No attempt crashed: a body ran twice only if its executor held it, finished and not
    # yet recorded, when the cancel killed that executor; nothing recorded ran again.
    ran = executions(run.calls)
    twice = {run.futures[x].task_run_id for x, n in ran.items() if n > 1}
    assert all(n <= 2 for n in ran.values()), ran
    assert twice <= {i for _, _, held in run.holding for i in held}, twice
    assert not twice & set(run.recorded), twice & set(run.recorded)
    assert_nothing_left(client, executor_ids(client, ids))


@pytest.mark.slow
def test_no_body_starts_after_its_flow_run_is_cancelled(workers: WorkerProcesses,
                                                        client: redis.Redis,
                                                        tmp_path: Path) -> None:
    """The cancel told its caller that the claimed task runs are being stopped: none of
    them may start afterwards; each ends CANCELLED."""
    run = _cancel_mid_batch(workers, client, tmp_path)
    late = {x for x, n in executions(run.calls).items() if n > run.ran_before[x]}
    assert late == set(), f"bodies started after the cancel: {sorted(late)}"
    never_started = [f.task_run_id for x, f in enumerate(run.futures) if x not in run.ran_before]
    assert {_state(client, i) for i in never_started} == {"cancelled"}
