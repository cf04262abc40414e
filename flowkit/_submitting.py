"""How a driver submits task runs: register their futures (and what they wait on), send the
enqueue, and on its reply release or fail what waits, or undo the submit.

A map's later chunks are sent on an :class:`~flowkit.store.enqueue_stream.EnqueueStream`,
each while the server still runs the one before, so sending and ending a submit are two
steps: :func:`send_submit` returns the function that ends it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowkit._dependencies import refuse_summary_upstreams
from flowkit.futures import TaskFuture
from flowkit.store import probes, task_runs

if TYPE_CHECKING:
    from flowkit.driver import Driver
    from flowkit.store.enqueue_stream import EnqueueStream

Specs = list[task_runs.TaskRunSpec]


def send_submit(driver: Driver, specs: Specs, upstreams: list[list[TaskFuture[Any]]],
                cache: task_runs.CacheOptions | None = None,
                adhoc: task_runs.AdhocRecord | None = None,
                futures: list[TaskFuture[Any]] | None = None,
                stream: EnqueueStream | None = None) -> Callable[[], list[TaskFuture[Any]]]:
    """:meth:`Driver.submit` in two halves: this one sends the enqueue (on ``stream``, without
    waiting for its reply; None: it waits here); the function it returns ends the submit
    (reads the reply, undoes the submit on an error, fails runs whose upstream failed)."""
    refuse_summary_upstreams([s.task_name for s in specs], upstreams)
    if futures is None:
        futures = [TaskFuture[Any](driver, s.id, s.task_name, s.queue) for s in specs]
    registered = _register(driver, specs, upstreams, futures)
    if registered is None:
        return lambda: []
    specs, futures, failed_upstream = registered
    for name in {s.queue for s in specs}:  # workers check their key against it
        probes.refresh_probe(driver.client, driver.key, name)  # (once a minute, not per task)
    ids = {s.id for s in specs}
    with driver._lock:  # not judged lost while its enqueue is still on the way
        driver._inflight |= ids
    try:
        if stream is None:
            task_runs.enqueue_task_runs(driver.client, driver.limits, specs, cache, adhoc)
            read = None
        else:
            read = task_runs.send_enqueue(driver.client, driver.limits, specs, cache, adhoc,
                                          stream)
    except BaseException as exc:
        _replied(driver, specs, ids, exc)
        raise

    def finish() -> list[TaskFuture[Any]]:
        try:
            if read is not None:
                read()
        except BaseException as exc:
            _replied(driver, specs, ids, exc)
            raise
        _replied(driver, specs, ids, None)
        for task_run_id, bad in failed_upstream:
            with driver._lock:
                decision = driver._dependencies.fail(task_run_id, bad.task_run_id)
            driver._apply(decision, {bad.task_run_id: (bad.task_name, bad.state)})
        driver.check_workers({s.queue for s in specs}, force=False)
        return futures

    return finish


def _register(driver: Driver, specs: Specs, upstreams: list[list[TaskFuture[Any]]],
              futures: list[TaskFuture[Any]]
              ) -> tuple[Specs, list[TaskFuture[Any]], list[tuple[str, TaskFuture[Any]]]] | None:
    """Remember the futures of a submit and hold the runs whose upstreams are unfinished.
    One already ended (cancelled before it was sent) is left out; None when all were."""
    failed_upstream: list[tuple[str, TaskFuture[Any]]] = []
    with driver._lock:
        if any(f.done() for f in futures):
            kept = [i for i, f in enumerate(futures) if not f.done()]
            specs, futures = [specs[i] for i in kept], [futures[i] for i in kept]
            upstreams = [upstreams[i] for i in kept]
            if not specs:
                return None
        for spec, future, ups in zip(specs, futures, upstreams):
            future.cache_key = spec.cache_key
            future.flow_run_id = spec.flow_run_id
            future.keep = spec.keep
            driver._futures[spec.id] = future
            driver._queue_counts[spec.queue] = driver._queue_counts.get(spec.queue, 0) + 1
            if not ups:  # (most calls of a map: nothing to wait for)
                continue
            pending = {u.task_run_id for u in ups if not u.done()}
            bad = next((u for u in ups if u.done() and not u.state.is_success), None)
            if pending or bad is not None:
                spec.held = True
                driver._dependencies.hold(spec.id, pending)
                if bad is not None:
                    failed_upstream.append((spec.id, bad))
    return specs, futures, failed_upstream


def _replied(driver: Driver, specs: Specs, ids: set[str], exc: BaseException | None) -> None:
    """An enqueue's reply came (``exc``: it failed, and is undone)."""
    try:
        if exc is not None:
            _undo_submit(driver, specs, exc)
    finally:
        with driver._lock:
            driver._inflight -= ids


def _undo_submit(driver: Driver, specs: Specs, exc: BaseException) -> None:
    """An enqueue failed (Redis full, a reset mid-pipeline): forget its futures, and cancel
    whatever part of it the server may have written, so none of it runs as an orphan."""
    ids = [s.id for s in specs]
    with driver._lock:
        for task_run_id in ids:
            driver._pop_future(task_run_id)
            driver._dependencies.forget(task_run_id)
    try:
        driver.cancel_task_runs(ids, f"cancelled: its submit failed ({type(exc).__name__})")
    except Exception:  # best effort: the server may refuse this too (full, away)
        pass
