"""Task runs from the driver's side: write and queue them, release or fail held ones, cancel
and retry; and the reads of task runs and their histories."""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowkit._ids import is_run_id
from flowkit.errors import StoreError
from flowkit.states import RunState
from flowkit.store import functions, keys, task_records
from flowkit.store._codec import decode
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

    from flowkit.store.enqueue_stream import EnqueueStream
    from flowkit.store.limits import Limits

#: RQ jobs for flowkit task runs call this function, so a stock ``rq worker`` can run them too.
RQ_FUNCTION = "flowkit.workers.rq_compat.run_task_run"
#: Task runs per enqueue call: bounds how long one call holds the server...
ENQUEUE_CHUNK_RUNS = 512
#: ...and how many envelope bytes it carries, so workers start on the first chunk early.
ENQUEUE_CHUNK_BYTES = 4 << 20
#: Call bodies above this size are written with a plain HSET beside the function call.
LARGE_BODY_BYTES = 64 << 10


@dataclass
class TaskRunSpec:
    """Everything a driver writes to queue one task call."""

    id: str
    flow_run_id: str
    task_name: str
    queue: str
    envelope: bytes
    body: bytes
    reply_to: str
    parameters: str = "{}"
    tags: list[str] = field(default_factory=list)
    retries: int = 0
    held: bool = False
    upstream: list[str] = field(default_factory=list)
    cache_key: str = ""
    cache_parts: str = ""
    #: What Redis keeps of a run that succeeds: "full" (record and history) or "summary"
    #: (only its flow run's counters; failures stay whole). For huge maps.
    keep: str = "full"


@dataclass(frozen=True)
class AdhocRecord:
    """The ad-hoc flow run a call outside any flow records with its first task runs."""

    name: str
    #: Close it after this call (it ends by itself when its task runs end).
    close: bool = False


@dataclass(frozen=True)
class CacheOptions:
    """How the task runs of one submit use the cache."""

    expiration_ms: int | None = None
    refresh: bool = False


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def _rq_data_template() -> tuple[bytes, bytes]:
    """RQ's job data (a pickled call of RQ_FUNCTION) split around a 16-character id."""
    marker = "\x00" * 16
    data = pickle.dumps((RQ_FUNCTION, None, (marker,), {}), protocol=4)
    before, after = data.split(marker.encode())
    return before, after


_RQ_DATA = _rq_data_template()


def enqueue_task_runs(client: redis.Redis, limits: Limits, specs: list[TaskRunSpec],
                      cache: CacheOptions | None = None, adhoc: AdhocRecord | None = None
                      ) -> None:
    """Write task runs and queue the ready ones (or answer them from the cache): one call of
    enqueue.lua per chunk of runs, all in one round trip.

    All specs of one call share task, flow run, queue and driver (one ``submit``/``map``).
    ``adhoc``: the flow run is a call's ad-hoc run, recorded by the same call when it does not
    exist yet (and closed after it when ``adhoc.close``), so a submit outside any flow costs
    no round trip more than one inside a flow.
    """
    if not specs:
        return
    shared, close = _shared_arguments(specs, cache, adhoc, remember=False)
    functions.execute(client,
                      lambda pipe: _queue_enqueue(client, limits, pipe, specs, shared, close))


def send_enqueue(client: redis.Redis, limits: Limits, specs: list[TaskRunSpec],
                 cache: CacheOptions | None, adhoc: AdhocRecord | None,
                 stream: EnqueueStream) -> Callable[[], None]:
    """:func:`enqueue_task_runs` sent on ``stream`` without waiting: returns the function
    that reads the replies (and raises what enqueue_task_runs would)."""
    from flowkit.store.enqueue_stream import CommandRecorder

    if not specs:
        return lambda: None
    # Remembered: after a dropped connection the stream sends the call again (it cannot know
    # whether the first one ran), and the library writes it only once.
    shared, close = _shared_arguments(specs, cache, adhoc, remember=True)
    recorder = CommandRecorder()
    _queue_enqueue(client, limits, recorder, specs, shared, close)
    return stream.send(recorder.commands)


#: Where, in the arguments all runs of an enqueue call share, the "close the ad-hoc run after
#: this call" flag is (enqueue.lua's a[13]).
_CLOSE_AT = 12


def _shared_arguments(specs: list[TaskRunSpec], cache: CacheOptions | None,
                      adhoc: AdhocRecord | None, remember: bool) -> tuple[list[Any], bool]:
    """The enqueue arguments all runs of one call share, and whether it closes its run."""
    cache = cache or CacheOptions()
    first = specs[0]
    shared = [first.flow_run_id, first.task_name, first.queue, first.reply_to,
              json.dumps(first.tags), first.retries, *_RQ_DATA, _iso(time.time()),
              "" if cache.expiration_ms is None else cache.expiration_ms,
              "1" if cache.refresh else "0", adhoc.name if adhoc else "", "0", first.keep,
              "1" if remember else "0"]
    return shared, adhoc is not None and adhoc.close


def _queue_enqueue(client: redis.Redis, limits: Limits, pipe: Any, specs: list[TaskRunSpec],
                   shared: list[Any], close: bool) -> None:
    args: list[Any] = list(shared)
    size = 0
    for spec in specs:
        body = spec.body
        if len(body) > LARGE_BODY_BYTES:
            # Large calls skip the function's arguments (Lua would copy them once more).
            pipe.hset(keys.rq_job(spec.id), "flowkit_body", body)
            body = b""
        args += [spec.id, spec.envelope, body, spec.parameters, "1" if spec.held else "0",
                 ",".join(spec.upstream), spec.cache_key, spec.cache_parts]
        size += len(spec.body)
        full = len(args) - len(shared) >= 8 * ENQUEUE_CHUNK_RUNS or size >= ENQUEUE_CHUNK_BYTES
        if full and spec is not specs[-1]:
            functions.call(client, "enqueue", limits, args, pipe=pipe)
            args, size = list(shared), 0
    if len(args) > len(shared):
        if close:  # the last chunk closes the ad-hoc run
            args[_CLOSE_AT] = "1"
        functions.call(client, "enqueue", limits, args, pipe=pipe)


def release_held(client: redis.Redis, limits: Limits, task_run_ids: list[str]) -> int:
    """Queue held task runs whose upstream futures completed; returns how many were queued
    (one cancelled meanwhile stays put)."""
    if not task_run_ids:
        return 0
    return int(functions.call(client, "release_held", limits, task_run_ids))


def fail_unstarted(client: redis.Redis, limits: Limits, failures: list[tuple[str, str]],
                   state: RunState, error_type: str) -> int:
    """End pending task runs that will never run (an upstream failed): ``(task run id,
    message)`` pairs, atomically, the way every end of a run is recorded; returns how many
    were ended."""
    if not failures:
        return 0
    return int(functions.call(client, "fail_unstarted", limits,
                              [state.value, error_type, *(v for pair in failures for v in pair)]))


def cancel(client: redis.Redis, limits: Limits, *, flow_run_id: str = "",
           task_run_ids: Iterable[str] = (), message: str = "cancelled") -> tuple[int, int]:
    """Cancel a flow run (it ends CANCELLED, with all its task runs, and the driver running
    it is told) or the given task runs: ``(cancelled at once, running attempts flagged for
    their supervisors to kill)``.

    Bounded work per server call, linear in all: CANCEL_CHUNK_RUNS task runs per library
    call, CANCEL_CALLS_PER_TRIP calls per round trip (other clients are served between them),
    then the queues are swept of the cancelled ids in stretches of SWEEP_CHUNK. Up to
    CANCEL_LREM_MAX ids (``future.cancel()``) are taken off their queue in the call itself.
    """
    targets = list(_cancel_targets(client, flow_run_id, task_run_ids))
    remove_now = "1" if len(targets) <= CANCEL_LREM_MAX else "0"
    dropped = flagged = 0
    queues: set[str] = set()
    first = [flow_run_id]  # the flow run moves with the first chunk, once

    def send(chunks: list[list[str]]) -> None:
        nonlocal dropped, flagged

        moving = first[0]  # read once: build() runs again when the library is reloaded

        def build(pipe: Any) -> None:
            for i, chunk in enumerate(chunks):
                functions.call(client, "cancel", limits,
                               [message, moving if i == 0 else "", remove_now, *chunk],
                               pipe=pipe)

        for reply in functions.execute(client, build):
            dropped, flagged = dropped + int(reply[0]), flagged + int(reply[1])
            queues.update(q.decode() for q in reply[2:])
        first[0] = ""

    batch: list[list[str]] = []
    for chunk in _chunks(targets, CANCEL_CHUNK_RUNS):
        batch.append(chunk)
        if len(batch) == CANCEL_CALLS_PER_TRIP:
            send(batch)
            batch = []
    if batch or first[0]:
        send(batch or [[]])
    for name in sorted(queues):
        sweep_queue(client, limits, name)
    return dropped, flagged


#: Task runs per cancel call: about 32 us of server time each (measured on an idle 2-core
#: machine), so a call takes under 2 ms; on a machine loaded 5 deep they stretched tenfold.
CANCEL_CHUNK_RUNS = 50
#: Cancel calls per round trip. The server runs a client's pipelined calls back to back
#: before it serves anyone else, so this bounds how long other clients wait (4 x 2 ms).
CANCEL_CALLS_PER_TRIP = 4
#: Cancels of up to this many task runs take them off their queues at once (an LREM each).
CANCEL_LREM_MAX = 8
#: Queue entries one sweep call looks at (about 1 ms of server time for 500).
SWEEP_CHUNK = 500


def flow_task_run_ids(client: redis.Redis, flow_run_id: str) -> list[str]:
    """Every task run id of a flow run, read in pages."""
    return list(_cancel_targets(client, flow_run_id, ()))


def _cancel_targets(client: redis.Redis, flow_run_id: str,
                    task_run_ids: Iterable[str]) -> Iterator[str]:
    """The ids to cancel: the given ones, then the flow run's task runs, read in pages."""
    yield from task_run_ids
    if not flow_run_id:
        return
    offset, page = 0, 10_000
    while True:
        ids = index_page(client, flow_run_id, offset, offset + page - 1)
        yield from (i.decode() for i in ids)
        if len(ids) < page:
            return
        offset += page


def _chunks(ids: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for task_run_id in ids:
        chunk.append(task_run_id)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def sweep_queue(client: redis.Redis, limits: Limits, queue: str) -> int:
    """Remove ended task runs' ids (cancelled while queued) from a queue, SWEEP_CHUNK entries
    per call, front to back; returns how many were removed (claims drop the others)."""
    start, removed = 0, 0
    while True:
        start_next, seen, gone = functions.call(client, "sweep", limits,
                                                [queue, start, SWEEP_CHUNK])
        removed += int(gone)
        if int(seen) < SWEEP_CHUNK:
            return removed
        start = int(start_next)


def retry(client: redis.Redis, limits: Limits, flow_run_id: str) -> tuple[int, int]:
    """Queue a flow run's failed task runs again: ``(retried, no longer retryable)``."""
    retried, skipped = functions.call(client, "retry", limits, [flow_run_id])
    return int(retried), int(skipped)


def index_page(client: redis.Redis, flow_run_id: str, start: int, stop: int) -> list[bytes]:
    """Ids ``start..stop`` of a flow run's task index: a list, or for runs recorded before
    issue 9 a sorted set."""
    key = keys.flow_run_tasks(flow_run_id)
    try:
        ids: list[bytes] = call(client, client.lrange, key, start, stop)
    except StoreError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        ids = call(client, client.zrange, key, start, stop)
    return ids


def get_task_runs(client: redis.Redis, flow_run_id: str, *, offset: int = 0,
                  limit: int = 1000) -> list[dict[str, str]]:
    """A page of a flow run's task runs in submission order."""
    if not is_run_id(flow_run_id):
        return []
    ids = index_page(client, flow_run_id, offset, offset + limit - 1)
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.flow_run(flow_run_id), "task_name")
    for task_run_id in ids:
        pipe.hgetall(keys.task_run(task_run_id.decode()))
    flow_task, *raws = call(client, pipe.execute)
    task = flow_task.decode() if flow_task else ""
    return [task_records.fields(task_run_id.decode(), decode(raw), task)
            for task_run_id, raw in zip(ids, raws, strict=True) if raw]


def get_task_run(client: redis.Redis, task_run_id: str) -> dict[str, str] | None:
    """One task run's fields, or None (also for a string that is not a run id)."""
    if not is_run_id(task_run_id):
        return None
    raw = call(client, client.hgetall, keys.task_run(task_run_id))
    if not raw:
        return None
    record = decode(raw)
    flow_task = ""
    if not task_records.names_its_task(record) and record.get("flow_run_id"):
        found = call(client, client.hget, keys.flow_run(record["flow_run_id"]), "task_name")
        flow_task = found.decode() if found else ""
    return task_records.fields(task_run_id, record, flow_task)


def read_result(client: redis.Redis, task_run_id: str) -> bytes | None:
    """A task run's sealed result: from its record (small ones live there) or its own key
    (larger ones, until the result ttl), in one round trip; None when neither holds it."""
    pipe = client.pipeline(transaction=False)
    pipe.hget(keys.task_run(task_run_id), "result")
    pipe.get(keys.result(task_run_id))
    inline, stored = call(client, pipe.execute)
    found: bytes | None = inline if inline is not None else stored
    return found


def get_task_state(client: redis.Redis, task_run_id: str) -> RunState | None:
    """A task run's current state, or None when it does not exist."""
    if not is_run_id(task_run_id):
        return None
    raw = call(client, client.hget, keys.task_run(task_run_id), "state")
    return RunState(raw.decode()) if raw else None


def get_history(client: redis.Redis, task_run_id: str) -> list[dict[str, Any]]:
    """A task run's state transitions, oldest first."""
    if not is_run_id(task_run_id):
        return []
    raw = call(client, client.hgetall, keys.task_run(task_run_id))
    if not raw:
        return []
    record = decode(raw)
    if not task_records.keeps_history_inside(record):
        legacy = call(client, client.lrange, keys.legacy_task_run_history(task_run_id), 0, -1)
        return [json.loads(item) for item in legacy]
    return task_records.history(record)
