"""Every Redis key flowkit uses: the contract between drivers, workers and the dashboard.

Queues are RQ queues (``rq:queue:<name>`` lists registered in ``rq:queues``) and every task run
is also an RQ job hash (``rq:job:<id>``), so ``rq info`` shows flowkit's queues and jobs. All
other state lives under ``flowkit:``.

The Lua library gets the same builders, generated from :data:`LUA_BUILDERS` and
:data:`LUA_CONSTANTS` (``K.task_run(id)``, ``K.EVENTS`` in Lua): no script spells a key.
"""

from __future__ import annotations

from collections.abc import Callable

#: Prefix of every flowkit-owned key.
PREFIX = "flowkit:"
#: RQ's registry of queue keys (a set).
RQ_QUEUES = "rq:queues"
#: Prefix of RQ queue lists; the rest is the queue name.
RQ_QUEUE_PREFIX = "rq:queue:"
#: Prefix of RQ job hashes; flowkit keeps the task envelope in field ``flowkit_envelope``.
RQ_JOB_PREFIX = "rq:job:"

TASK_RUN_PREFIX = PREFIX + "taskrun:"
FLOW_RUN_PREFIX = PREFIX + "flowrun:"
WORKER_PREFIX = PREFIX + "worker:"
#: Prefix of task run results.
RESULT_PREFIX = PREFIX + "result:"
#: Prefix of executors' processing lists.
PROCESSING_PREFIX = PREFIX + "processing:"
#: Prefix of cache entries (sealed result bytes) by cache key; ``:lock`` and ``:waiters``
#: suffixes hold the single-flight leader and the task runs waiting for it.
CACHE_PREFIX = PREFIX + "cache:"
#: Prefix of the set of cache keys written by one task (the rest is the task name).
CACHE_INDEX_PREFIX = PREFIX + "cacheindex:"
#: Prefix of the per-state flow run indexes (the rest is the state).
FLOW_RUNS_STATE_PREFIX = PREFIX + "flowruns:state:"
#: Prefix of queue statistics hashes: ``running`` and ``done:<minute>``/``failed:<minute>``.
QUEUE_STATS_PREFIX = PREFIX + "queuestats:"

#: Sorted set of flow run ids by creation time (score: epoch seconds).
FLOW_RUNS = PREFIX + "flowruns"
#: Sorted set of live worker ids by last heartbeat.
WORKERS = PREFIX + "workers"
#: Capped stream of state changes (``flowkit.task-run.<state>``, ``flowkit.flow-run.<state>``,
#: schema in ``flowkit/store/events.py``).
EVENTS = PREFIX + "events"
#: Sorted set of running attempts by lease deadline: past it, the attempt is presumed dead.
LEASES = PREFIX + "leases"
#: List of task runs given up after crashing their executor too often (newest last).
DEAD_LETTER = PREFIX + "deadletter"
#: Set of running task runs whose cancellation was requested (supervisors kill them).
CANCELLING = PREFIX + "cancelling"
#: Sorted set of task run ids waiting out a retry delay, scored by when they are due.
RETRIES_DUE = PREFIX + "retries:due"
#: Sorted set of heartbeating driver ids by deadline (the Redis server's time plus the driver's
#: partition tolerance): past it, the driver is lost and its flow runs are ended.
DRIVERS = PREFIX + "drivers"
#: A random token written once (SET NX, no expiry) by the first driver or worker: when it
#: vanishes or changes, the server lost flowkit's state (restarted empty, flushed).
EPOCH = PREFIX + "epoch"
#: Held (SET NX PX) by the supervisor running this minute's retention sweep.
PRUNE_LOCK = PREFIX + "prune:lock"


def queue(name: str) -> str:
    """The RQ list holding the ids of task runs waiting on queue ``name``."""
    return RQ_QUEUE_PREFIX + name


def queue_name(key: str) -> str:
    """The queue name of an RQ queue key."""
    return key[len(RQ_QUEUE_PREFIX):] if key.startswith(RQ_QUEUE_PREFIX) else key


def bell(name: str) -> str:
    """Wake-up tokens of queue ``name`` for workers serving several queues (the library's
    ``push_task`` rings it; the claim clears it when the queue is empty)."""
    return PREFIX + "bell:" + name


def queue_workers(name: str) -> str:
    """Sorted set of worker ids serving queue ``name``, scored by last heartbeat."""
    return f"{PREFIX}queue:{name}:workers"


def probe(name: str) -> str:
    """Hash of queue ``name``'s probes: per driver key id, a short payload sealed with that
    key; a worker whose key has none would fail every task there (store/probes.py)."""
    return f"{PREFIX}probe:{name}"


def queue_stats(name: str) -> str:
    """Hash of queue ``name``'s counters, maintained by the scripts at every transition."""
    return QUEUE_STATS_PREFIX + name


def rq_job(task_run_id: str) -> str:
    """The RQ job hash of a task run (holds the envelope until the run ends)."""
    return RQ_JOB_PREFIX + task_run_id


def task_run(task_run_id: str) -> str:
    """Hash with one task run's fields (state, attempt, worker, error...) and its history
    (fields h1..h<hn>, see task_runs.get_history)."""
    return TASK_RUN_PREFIX + task_run_id


def result(task_run_id: str) -> str:
    """Sealed pickled return value of a completed task run."""
    return RESULT_PREFIX + task_run_id


def function(digest: str) -> str:
    """A pickled task function, stored once and referenced by digest from envelopes."""
    return f"{PREFIX}fn:{digest}"


def flow_run(flow_run_id: str) -> str:
    """Hash with one flow run's fields and its per-state task counters (``n_<state>``)."""
    return FLOW_RUN_PREFIX + flow_run_id


def flow_run_tasks(flow_run_id: str) -> str:
    """List of a flow run's task run ids in submission order (a sorted set before issue 9:
    readers of runs recorded then handle both, see task_runs.index_page and base.lua)."""
    return f"{FLOW_RUN_PREFIX}{flow_run_id}:tasks"


def flow_runs_in_state(state: str) -> str:
    """Sorted set of flow run ids currently in ``state``, by creation time."""
    return FLOW_RUNS_STATE_PREFIX + state


def flow_runs_named(name: str) -> str:
    """Sorted set of the ids of flow runs with this name, by creation time."""
    return f"{PREFIX}flowruns:name:{name}"


def logs(flow_run_id: str) -> str:
    """Capped stream of a flow run's log lines."""
    return f"{PREFIX}logs:{flow_run_id}"


def reply(driver_id: str) -> str:
    """Stream of completions and log lines addressed to one driver process."""
    return f"{PREFIX}reply:{driver_id}"


def driver(driver_id: str) -> str:
    """Hash of a heartbeating driver: ``label`` (host and pid), ``tolerance``, ``runs``."""
    return f"{PREFIX}driver:{driver_id}"


def worker(worker_id: str) -> str:
    """Hash describing one worker (host, pid, queues, concurrency, counters)."""
    return WORKER_PREFIX + worker_id


def processing(executor_id: str) -> str:
    """List of task run ids an executor has claimed and not yet finished."""
    return PROCESSING_PREFIX + executor_id


def legacy_task_run_history(task_run_id: str) -> str:
    """List of JSON state transitions of a task run recorded before issue 9 (newer runs keep
    their history inside their record): read and pruned for runs recorded then."""
    return f"{TASK_RUN_PREFIX}{task_run_id}:history"


def last_claim(executor_id: str) -> str:
    """String: an executor's last claim, ``<token>|<id>,<id>...`` (expiring), so that a claim
    sent twice (its reply lost) answers with the same task runs instead of taking more."""
    return PROCESSING_PREFIX + executor_id + ":last"


def enqueued(task_run_id: str) -> str:
    """String: marks an enqueue call sent on a map's stream, by its first task run (expiring),
    so that the call sent again after a dropped connection writes nothing twice."""
    return PREFIX + "enqueued:" + task_run_id


def cache(cache_key: str) -> str:
    """The cached result for ``cache_key`` (sealed result bytes)."""
    return CACHE_PREFIX + cache_key


def cache_lock(cache_key: str) -> str:
    """The task run computing ``cache_key`` right now (single flight), with an expiry."""
    return CACHE_PREFIX + cache_key + ":lock"


def cache_waiters(cache_key: str) -> str:
    """List of task runs waiting for the task run computing ``cache_key``."""
    return CACHE_PREFIX + cache_key + ":waiters"


def cache_index(task_name: str) -> str:
    """Set of the cache keys a task has written (for ``flowkit cache clear --task``)."""
    return CACHE_INDEX_PREFIX + task_name


#: Key builders the Lua library gets, by name (``K.<name>(id)`` there).
LUA_BUILDERS: tuple[Callable[[str], str], ...] = (
    queue, bell, queue_stats, rq_job, task_run, legacy_task_run_history, result, flow_run,
    flow_run_tasks, flow_runs_in_state, flow_runs_named, logs, worker, processing, last_claim,
    enqueued, cache,
    cache_lock, cache_waiters, cache_index, queue_workers, driver, reply,
)

#: Fixed keys the Lua library gets (``K.<NAME>`` there).
LUA_CONSTANTS: dict[str, str] = {
    "FLOW_RUNS": FLOW_RUNS, "EVENTS": EVENTS, "LEASES": LEASES, "DEAD_LETTER": DEAD_LETTER,
    "CANCELLING": CANCELLING, "RETRIES_DUE": RETRIES_DUE, "RQ_QUEUES": RQ_QUEUES,
    "WORKERS": WORKERS,
    "DRIVERS": DRIVERS,
}


def worker_stop(worker_id: str) -> str:
    """A request that worker ``worker_id`` drain and stop (its value: the grace in seconds,
    '' for the worker's own); written by `flowkit worker stop`, taken by the supervisor."""
    return f"{WORKER_PREFIX}{worker_id}:stop"
