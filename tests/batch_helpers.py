"""Tasks and checks for the batched-path crash tests (tests/test_batched_paths.py).

The tasks live here, not in the test module, so that worker processes can import them by
name without importing pytest fixtures. Every read of run state goes through the store API
(task_runs, flow_runs, stats, attempts), so the checks survive a change of the Lua library's
history or counter layout as long as the store API keeps its meaning.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import redis

from flowkit import task
from flowkit.states import RunState
from flowkit.store import attempts, flow_runs, keys, task_runs
from flowkit.store.stats import queue_throughput

#: States a task run can end in (no further transition).
TERMINAL = {s.value for s in (RunState.COMPLETED, RunState.CACHED, RunState.FAILED,
                              RunState.TIMED_OUT, RunState.CRASHED, RunState.CANCELLED)}
#: History states that end one attempt (as opposed to 'running' and 'pending').
ATTEMPT_ENDS = {"completed", "failed", "crashed", "timed_out", "cancelled"}
#: How long a blocked body waits for its release before giving up (bounds every test).
BLOCK_LIMIT_SECONDS = 60.0


def result_of(x: int) -> int:
    """What ``logged(x)`` returns: checked against every future's result."""
    return x * 10 + 7


def _claimed_behind(client: Any, task_run_id: str) -> bool:
    """Whether this attempt's executor holds claims it has not started, behind this one."""
    record = task_runs.get_task_run(client, task_run_id) or {}
    held = attempts.processing(client, [record.get("executor", "")])
    return task_run_id in held and held.index(task_run_id) < len(held) - 1


@task
def logged(path: str, x: int, block_dir: str = "", blockers: int = 1) -> int:
    """Append ``x`` to ``path`` (one line per execution, so a body that ran twice shows), and
    return ``result_of(x)``.

    With ``block_dir``, an execution that finds its executor holding unstarted claims behind
    it (a batch) becomes a blocker: it writes ``<block_dir>/blocker-<n>`` (its task run id
    and pid) and waits for ``<block_dir>/go``, so the test can act mid-batch. At most
    ``blockers`` executions ever block, one per executor (the files are created
    exclusively); a re-run does not block again.
    """
    from flowkit.context import task_run_ctx  # the body travels by value: no global ContextVar

    with open(path, "a") as f:
        f.write(f"{x}\n")
    ctx = task_run_ctx.get()
    if block_dir and ctx is not None and _may_block(Path(block_dir), blockers):
        if _claimed_behind(ctx.client, ctx.task_run_id):
            _block(Path(block_dir), blockers, ctx.task_run_id)
    return result_of(x)


def _may_block(block_dir: Path, blockers: int) -> bool:
    taken = list(block_dir.glob("blocker-*"))
    mine = f" {os.getpid()}\n"
    return len(taken) < blockers and not any(p.read_text().endswith(mine) for p in taken)


def _block(block_dir: Path, blockers: int, task_run_id: str) -> None:
    for n in range(blockers):
        try:
            fd = os.open(block_dir / f"blocker-{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            continue
        os.write(fd, f"{task_run_id} {os.getpid()}\n".encode())
        os.close(fd)
        deadline = time.monotonic() + BLOCK_LIMIT_SECONDS
        while not (block_dir / "go").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return


def blocked(block_dir: Path) -> list[tuple[str, int]]:
    """The blocked bodies' task run ids and executor pids, in the order they blocked."""
    out = []
    for n in range(len(list(block_dir.glob("blocker-*")))):
        try:
            task_run_id, pid = (block_dir / f"blocker-{n}").read_text().split()
        except (OSError, ValueError):
            break  # being written
        out.append((task_run_id, int(pid)))
    return out


def executions(path: Path) -> Counter[int]:
    """How many times each ``logged`` input ran, from its file."""
    return Counter(int(line) for line in path.read_text().split()) if path.exists() else Counter()


def attempts_of(history: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """A history as (state, attempt) pairs, for messages and comparisons."""
    return [(h["state"], int(h.get("attempt") or 0)) for h in history]


def check_history(client: redis.Redis, task_run_id: str, end: str = "completed"
                  ) -> list[dict[str, Any]]:
    """Assert that a task run's history is consistent and recorded ``end`` exactly once:
    attempts start at 1 and go up by one per 'running' entry, every entry that ends an attempt
    follows that attempt's 'running' entry, and the last entry is the run's one ``end`` with
    the run's own attempt number. Returns the history."""
    history = task_runs.get_history(client, task_run_id)
    record = task_runs.get_task_run(client, task_run_id) or {}
    pairs = attempts_of(history)
    assert [s for s, _ in pairs].count(end) == 1, (task_run_id, pairs)
    assert pairs and pairs[-1] == (end, int(record.get("attempt") or 0)), (task_run_id, pairs,
                                                                           record)
    running = [a for s, a in pairs if s == "running"]
    assert running == list(range(1, len(running) + 1)), (task_run_id, pairs)
    current = 0
    for state, attempt in pairs:
        if state == "running":
            current = attempt
        elif state in ATTEMPT_ENDS:
            assert attempt == current, (task_run_id, pairs)
            current = -1  # an attempt ends once
    # An end with attempt 0 is a run ended before any attempt (cancelled while queued).
    ends = [s for s, a in pairs if s in ATTEMPT_ENDS and a > 0]
    assert len(ends) == len(running), (task_run_id, pairs)
    return history


def flow_counts(client: redis.Redis, flow_run_id: str) -> dict[str, int]:
    """A flow run's non-zero per-state task counts (its counters, kept at write time)."""
    row = flow_runs.get_flow_run(client, flow_run_id)
    assert row is not None, flow_run_id
    return flow_runs.task_counts(row)


def queue_totals(client: redis.Redis, queue: str = "default") -> tuple[int, int, int]:
    """(running attempts, task runs done, task runs failed) of a queue, from its counters."""
    stats = queue_throughput(client, [queue], minutes=60)[queue]
    return stats["running"], sum(stats["done_per_minute"]), sum(stats["failed_per_minute"])


def assert_nothing_left(client: redis.Redis, executor_ids: set[str],
                        queue: str = "default") -> None:
    """No task run queued, claimed, leased, being cancelled or waiting for a retry."""
    left = {"queue": client.llen(keys.queue(queue)),
            "processing": attempts.processing(client, sorted(executor_ids)),
            "leases": client.zcard(keys.LEASES),
            "cancelling": client.scard(keys.CANCELLING),
            "retries_due": client.zcard(keys.RETRIES_DUE)}
    assert left == {"queue": 0, "processing": [], "leases": 0, "cancelling": 0,
                    "retries_due": 0}, left


def executor_ids(client: redis.Redis, task_run_ids: list[str]) -> set[str]:
    """The executors recorded on these task runs (to check their processing lists)."""
    out = set()
    for task_run_id in task_run_ids:
        record = task_runs.get_task_run(client, task_run_id) or {}
        if record.get("executor"):
            out.add(record["executor"])
    return out


@task(retries=1, retry_on=(ValueError,))
def by_kind(kind: str) -> str:
    """'ok' completes; 'retry' fails its first attempt with a retryable error, then
    completes; 'terminal' fails with an error its retry policy does not retry."""
    from flowkit.context import task_run_ctx

    ctx = task_run_ctx.get()
    if kind == "retry" and ctx is not None and ctx.attempt == 1:
        raise ValueError("first attempt fails, retryably")
    if kind == "terminal":
        raise RuntimeError("fails for good")
    return kind


# -- an executor's calls, made from the test process -------------------------------------------
#: The worker and executor the tests that call the store directly claim as.
WORKER, EXECUTOR = "w-direct", "e-direct"


def claim_here(client: redis.Redis, limits: Any, n: int) -> list[attempts.Claim]:
    """Claim up to ``n`` queued task runs the way an executor does (bodies included)."""
    raw = attempts.claim(client, limits, WORKER, EXECUTOR, ["default"], lease_seconds=30,
                         limit=n)
    return attempts.fetch_bodies(client, attempts.parse_claims(raw, time.time()))


def run_here(client: redis.Redis, claims: list[attempts.Claim], secret: str
             ) -> list[tuple[attempts.Claim, attempts.Outcome]]:
    """Run claimed attempts in this process, as an executor would, keeping their outcomes."""
    from flowkit.serializers import load_signing_key
    from flowkit.workers.execution import ExecutionContext, run_attempt

    key = load_signing_key(secret, Path(os.environ["FLOWKIT_HOME"]))
    ctx = ExecutionContext(client, key, "default")
    return [(c, run_attempt(ctx, c).outcome) for c in claims]


def refusals(client: redis.Redis, flow_run_id: str) -> list[str]:
    """The fence's refusal lines in a flow run's log stream."""
    from flowkit.store.logs import read_logs

    return [fields.get("message", "") for _, fields in read_logs(client, flow_run_id)
            if "stale result refused" in fields.get("message", "")]
