"""``@task`` and :class:`Task`: plain functions that run on worker processes."""

from __future__ import annotations

import datetime as dt
import gc
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as _encode_str
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowkit import serializers
from flowkit._argument_size import always_picklable, plain_size_bound, too_large
from flowkit._map_submit import (
    FIRST_CHUNK_RUNS,
    MAX_CHUNK_RUNS,
    SYNC_RUNS,
    MapCalls,
    MapSubmission,
    _ChunkSender,
)
from flowkit._map_submit import unmapped as unmapped
from flowkit.context import flow_run_ctx, task_run_ctx
from flowkit.errors import ArgumentTooLarge, ConfigurationError
from flowkit.futures import ResultRef, TaskFuture

if TYPE_CHECKING:
    from flowkit.caching import CacheKey, CachePolicy
    from flowkit.driver import Driver
    from flowkit.store.task_runs import CacheOptions, TaskRunSpec

P = ParamSpec("P")
R = TypeVar("R")


#: A map is signed and sent in chunks of about this many bytes of pickled calls (and of at
#: most _map_submit.MAX_CHUNK_RUNS calls).
SUBMIT_CHUNK_BYTES = 4 << 20
#: Argument types a parameters preview shows as they are.
_SCALARS = frozenset({int, float, bool, type(None)})
#: Argument types that cannot hold futures.
_PLAIN = frozenset({int, float, bool, type(None), str, bytes})
#: Pickled calls of one submit kept in memory between validating and sending them.
KEEP_PICKLED_BYTES = 16 << 20


class TaskOptions(BaseModel):
    """Options of a task (Prefect-compatible names)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    description: str | None = None
    retries: int = Field(default=0, ge=0)
    retry_delay_seconds: float | list[float] | Callable[[int], Any] = 0.0
    retry_jitter_factor: float | None = Field(default=None, ge=0)
    retry_on: tuple[type[BaseException], ...] | None = None
    retry_condition_fn: Callable[..., bool] | None = None
    timeout_seconds: float | None = Field(default=None, gt=0)
    cache_policy: Any = None
    cache_key_fn: Callable[..., str | None] | None = None
    cache_expiration: dt.timedelta | None = None
    refresh_cache: bool | None = None
    log_prints: bool | None = None
    tags: frozenset[str] = frozenset()
    queue: str | None = None
    #: What Redis keeps of a task run that succeeds: "full" (its record and history, until
    #: retention) or "summary" (its flow run's counters only; failures stay whole). flowkit's
    #: own option, for huge maps: a summary future's result reaches the driver and no one else.
    keep: Literal["full", "summary"] = "full"

    @field_validator("retry_delay_seconds")
    @classmethod
    def _delays_not_negative(cls, value: Any) -> Any:
        values = value if isinstance(value, list) else [value] if not callable(value) else []
        if any(v < 0 for v in values):
            raise ValueError("retry_delay_seconds must not be negative")
        return value

    @field_validator("retry_on", mode="before")
    @classmethod
    def _exception_types(cls, value: Any) -> Any:
        if isinstance(value, type):
            value = (value,)
        if value is not None and not all(isinstance(v, type) and issubclass(v, BaseException)
                                         for v in value):
            raise ValueError("retry_on takes exception classes, e.g. (ConnectionError,)")
        return value

    @field_validator("cache_expiration", mode="before")
    @classmethod
    def _seconds_to_timedelta(cls, value: Any) -> Any:
        return dt.timedelta(seconds=value) if isinstance(value, (int, float)) else value

    @field_validator("queue")
    @classmethod
    def _queue_name(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError(f"queue name {value!r} must be non-empty and contain no spaces")
        return value


def _replace_futures(value: Any, found: list[TaskFuture[Any]], depth: int = 0) -> Any:
    """Swap futures (also inside lists, tuples, sets and dicts) for ResultRefs."""
    if isinstance(value, TaskFuture):
        found.append(value)
        return ResultRef(value.task_run_id, value.cache_key)
    if depth > 3:
        return value
    if isinstance(value, (list, tuple)) and any(isinstance(v, (TaskFuture, list, tuple, dict))
                                                for v in value):
        items = [_replace_futures(v, found, depth + 1) for v in value]
        return type(value)(items) if not hasattr(value, "_fields") else type(value)(*items)
    if isinstance(value, dict) and any(isinstance(v, (TaskFuture, list, tuple, dict))
                                       for v in value.values()):
        return {k: _replace_futures(v, found, depth + 1) for k, v in value.items()}
    return value


class Task(Generic[P, R]):
    """A function that runs as a task run on a worker when submitted.

    Call it inside a flow to run it on a worker and get its value; call :meth:`submit` or
    :meth:`map` anywhere (a flow, a notebook cell, a script) to get futures.
    """

    def __init__(self, fn: Callable[P, R], options: TaskOptions) -> None:
        self.fn = fn
        self.options = options
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._signature = inspect.signature(fn)
        self._param_names = [p.name for p in self._signature.parameters.values()
                             if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self._secret_params = any(serializers.is_secret_name(n) for n in self._param_names)
        #: '"name": ' for each positional parameter, as json.dumps writes a dict's keys.
        self._preview_keys = [json.dumps(n) + ": " for n in self._param_names]
        self._policy: CachePolicy | None = None
        if options.cache_policy is not None or options.cache_key_fn is not None:
            from flowkit.caching import resolve_policy

            self._policy = resolve_policy(options.cache_policy, options.cache_key_fn)

    @property
    def name(self) -> str:
        return self.options.name

    def __repr__(self) -> str:
        return f"Task({self.name!r})"

    def with_options(self, **changes: Any) -> Task[P, R]:
        """A copy of this task with some options changed."""
        # Not model_dump(): it would turn policy objects and callables into plain dicts.
        merged = {**{name: getattr(self.options, name) for name in TaskOptions.model_fields},
                  **changes}
        if "tags" in changes:
            merged["tags"] = frozenset(changes["tags"])
        return Task(self.fn, TaskOptions(**merged))

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Inside a flow: run on a worker and return the value. Elsewhere: run locally."""
        if task_run_ctx.get() is None and flow_run_ctx.get() is not None:
            return self.submit(*args, **kwargs).result()
        return self.fn(*args, **kwargs)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskFuture[R]:
        """Queue one call for a worker and return its future (nothing waits)."""
        return self._submit_calls(MapCalls.single(args, kwargs))[0]

    def map(self, *args: Any, **kwargs: Any) -> list[TaskFuture[R]]:
        """Queue one call per element of the iterable arguments (``unmapped`` ones are whole).

        The first 992 calls are checked and queued before this returns; a background thread
        queues the rest in order (a call refused there fails every future of the map, and
        what was queued is cancelled).

        Raises:
            ConfigurationError: no argument is iterable, or they differ in length.
        """
        return self._submit_calls(MapCalls.of_map(self.name, args, kwargs))

    # -- internals --------------------------------------------------------------------------
    def _function_blob(self) -> tuple[str, bytes]:
        """The function pickled now, with what it refers to as it is now: a notebook that
        changed a global since the last submit sends the new value. Pickled once per
        submit/map call (not per element); equal blobs share a digest, so the driver writes
        each distinct one to Redis once."""
        return serializers.dumps_function(self.fn)

    def _execution_options(self) -> dict[str, Any]:
        opts = self.options
        return {"retries": opts.retries, "retry_delay_seconds": opts.retry_delay_seconds,
                "retry_jitter_factor": opts.retry_jitter_factor, "retry_on": opts.retry_on,
                "retry_condition_fn": opts.retry_condition_fn,
                "timeout_seconds": opts.timeout_seconds, "log_prints": opts.log_prints,
                "queue": opts.queue}

    def _submit_calls(self, calls: MapCalls) -> list[TaskFuture[R]]:
        """Validate and queue the first SYNC_RUNS calls here; a background MapSubmission
        queues the rest (the futures exist at once, each sent with its chunk)."""
        from flowkit._ids import new_ids
        from flowkit.driver import get_driver

        driver = get_driver()
        flow_ctx = flow_run_ctx.get()
        adhoc = None if flow_ctx else driver.adhoc
        flow_run_id = flow_ctx.flow_run_id if flow_ctx else driver.adhoc.run_for_call()
        log_prints = self.options.log_prints
        if log_prints is None:
            log_prints = bool(flow_ctx and flow_ctx.log_prints)
        queue = self.options.queue or driver.settings.default_queue
        exec_opts = {**self._execution_options(), "log_prints": log_prints, "queue": queue}
        parameters = flow_ctx.parameters if flow_ctx else {}
        max_bytes = driver.settings.max_argument_bytes
        head = min(len(calls), SYNC_RUNS)
        futures = _new_futures(driver, new_ids(len(calls)), self.name, queue, flow_run_id)
        # Everything that can refuse the call (pickling, sizes, cache keys) runs before any
        # record is written: a refused call leaves nothing behind.
        prepared = self._prepare(calls, futures, 0, head, exec_opts, flow_run_id, parameters,
                                 max_bytes)
        digest, blob = self._function_blob()
        if adhoc is not None and any(call.upstream for call in prepared):
            adhoc.note_held(flow_run_id)
        sender = _ChunkSender(driver, self._cache_options(), futures,
                              adhoc.record(flow_run_id) if adhoc is not None else None)
        try:
            driver.store_function(digest, blob)
            self._send(driver, sender, prepared, exec_opts, flow_run_id, queue, digest,
                       last=head == len(calls))
        except BaseException:
            if adhoc is not None:
                adhoc.failed(flow_run_id)
                adhoc.call_ended(flow_run_id, closed=sender.closed_adhoc)
            raise
        if head == len(calls):
            if adhoc is not None:
                adhoc.call_ended(flow_run_id, closed=sender.closed_adhoc)
        else:
            self._submit_rest(driver, sender, calls, head, exec_opts, flow_run_id, queue, digest,
                              parameters, max_bytes)
        if flow_ctx is not None:
            flow_ctx.futures.extend(futures)
        return futures

    def _submit_rest(self, driver: Driver, sender: _ChunkSender, calls: MapCalls, head: int,
                     exec_opts: dict[str, Any], flow_run_id: str, queue: str, digest: str,
                     parameters: dict[str, Any], max_bytes: int) -> None:
        """Hand the calls past ``head`` to a background MapSubmission, built chunk by chunk."""
        adhoc = None if flow_run_ctx.get() else driver.adhoc

        def send_range(start: int, stop: int, last: bool) -> None:
            prepared = self._prepare(calls, sender.all_futures, start, stop, exec_opts,
                                     flow_run_id, parameters, max_bytes, queued_before=True)
            if adhoc is not None and any(call.upstream for call in prepared):
                adhoc.note_held(flow_run_id)
            self._send_chunks(driver, sender, prepared, exec_opts, flow_run_id, queue, digest,
                              last=last, chunk_runs=len(prepared))
            calls.release(start, stop)

        def ended(closed: bool) -> None:
            if adhoc is not None:
                adhoc.call_ended(flow_run_id, closed=closed)

        MapSubmission(driver, sender, flow_run_id, self.name, send_range, head, len(calls),
                      ended).start()

    def _prepare(self, calls: MapCalls, futures: list[TaskFuture[Any]], start: int, stop: int,
                 exec_opts: dict[str, Any],
                 flow_run_id: str, flow_parameters: dict[str, Any], max_bytes: int,
                 queued_before: bool = False) -> list[_PreparedCall]:
        """Pickle (and key) calls ``start`` to ``stop`` first: one that cannot travel, is
        larger than ``max_bytes`` pickled, or cannot be hashed for its cache key, raises
        before any of them is queued. Past KEEP_PICKLED_BYTES the bytes are dropped and
        pickled again when sent: cheaper than holding a whole large map.

        Raises:
            ArgumentTooLarge: a call's pickled arguments exceed ``max_bytes``.
        """
        prepared = []
        kept, options_plain = 0, serializers.plain_options(exec_opts)
        for index in range(start, stop):
            args, kwargs = calls[index]
            found: list[TaskFuture[Any]] = []
            if kwargs or not all(type(a) in _PLAIN for a in args):  # (plain: no futures)
                args = tuple(_replace_futures(a, found) for a in args)
                kwargs = {k: _replace_futures(v, found) for k, v in kwargs.items()}
            call = _PreparedCall(futures[index].task_run_id, args, kwargs, found,
                                 self._preview(args, kwargs))
            if (kept <= KEEP_PICKLED_BYTES or not always_picklable(args, kwargs)
                    or plain_size_bound(args, kwargs) > max_bytes):
                body = self._dump_body(args, kwargs, exec_opts, options_plain)
                if len(body) > max_bytes:
                    raise ArgumentTooLarge(too_large(self.name, index, len(calls), len(body),
                                                      max_bytes, queued_before))
                kept += len(body)
                call.body = body if kept <= KEEP_PICKLED_BYTES else None
            if self._policy is not None:
                call.cache_key = self._cache_key(call, flow_run_id, flow_parameters)
            prepared.append(call)
        return prepared

    def _cache_key(self, call: _PreparedCall, flow_run_id: str,
                   flow_parameters: dict[str, Any]) -> CacheKey | None:
        """The call's cache key. Policy keys are scoped to the task (two tasks with equal
        inputs must not share results); a ``cache_key_fn`` key is the user's to share."""
        from flowkit.caching import CacheContext, CacheKey, CacheKeyFnPolicy

        bound = self._signature.bind(*call.args, **call.kwargs)
        bound.apply_defaults()
        context = CacheContext(self.name, self.fn, flow_run_id, call.id, flow_parameters)
        key = self._policy.compute_key(context, dict(bound.arguments))  # type: ignore[union-attr]
        if key is None or isinstance(self._policy, CacheKeyFnPolicy):
            return key
        return CacheKey.from_parts({"task": self.name, **key.parts})

    def _cache_options(self) -> CacheOptions:
        from flowkit.store.task_runs import CacheOptions

        expiration = self.options.cache_expiration
        return CacheOptions(
            expiration_ms=int(expiration.total_seconds() * 1000) if expiration else None,
            refresh=bool(self.options.refresh_cache))

    def _send(self, driver: Driver, sender: _ChunkSender, prepared: list[_PreparedCall],
              exec_opts: dict[str, Any], flow_run_id: str, queue: str, digest: str,
              last: bool) -> None:
        """Sign and queue the first calls chunk by chunk: workers start on the first chunk
        while later ones are still being signed, a sender thread writing one chunk to Redis
        while this thread signs the next."""
        try:
            self._send_chunks(driver, sender, prepared, exec_opts, flow_run_id, queue, digest,
                              last=last)
            sender.wait()
        except BaseException as exc:
            sent = sender.drain()  # every chunk in flight is in Redis before anything else
            sender.close()
            if isinstance(exc, KeyboardInterrupt):
                if flow_run_ctx.get() is None:  # (in a flow, the flow's cancel takes it all)
                    from flowkit._interrupts import cancel_futures

                    cancel_futures(driver, sent)
            elif sent:
                # The call failed as a whole (Redis full mid-map, say): its caller never sees
                # these futures, so the chunks already queued must not run as orphans.
                try:
                    driver.cancel_task_runs(
                        [f.task_run_id for f in sent],
                        f"cancelled: the rest of this {self.name!r} call failed to submit "
                        f"({type(exc).__name__}: {exc})")
                except Exception:  # best effort: Redis may refuse this too (full, away)
                    pass
            raise
        if last:
            sender.close()

    def _send_chunks(self, driver: Driver, sender: _ChunkSender, prepared: list[_PreparedCall],
                     exec_opts: dict[str, Any], flow_run_id: str, queue: str, digest: str,
                     last: bool, chunk_runs: int = FIRST_CHUNK_RUNS) -> None:
        from flowkit.store.task_runs import TaskRunSpec

        specs: list[TaskRunSpec] = []
        upstreams: list[list[TaskFuture[Any]]] = []
        size, tags = 0, sorted(self.options.tags)
        heads = serializers.EnvelopeHeads(driver.key, self.name, digest)
        for index, call in enumerate(prepared):
            body = call.body if call.body is not None else self._dump_body(
                call.args, call.kwargs, exec_opts)
            task_run_id = call.id
            specs.append(TaskRunSpec(
                id=task_run_id, flow_run_id=flow_run_id, task_name=self.name, queue=queue,
                envelope=heads.build(task_run_id, body),
                body=body, reply_to=driver.reply_key, parameters=call.preview,
                tags=tags, retries=self.options.retries,
                upstream=[f.task_run_id for f in call.upstream],
                cache_key=call.cache_key.key if call.cache_key else "",
                cache_parts=json.dumps(call.cache_key.parts) if call.cache_key else "",
                keep=self.options.keep))
            upstreams.append(call.upstream)
            prepared[index] = _SENT  # the call now lives in its spec only
            size += len(body)
            end = index == len(prepared) - 1
            if size >= SUBMIT_CHUNK_BYTES or len(specs) >= chunk_runs or end:
                sender.send(specs, upstreams, last=last and end)
                specs, upstreams, size = [], [], 0
                chunk_runs = min(2 * chunk_runs, MAX_CHUNK_RUNS)

    def _dump_body(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                   exec_opts: dict[str, Any], options_plain: bool | None = None) -> bytes:
        return serializers.dumps_call(self.name, args, kwargs, self._param_names, exec_opts,
                                      options_plain)

    def _preview(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        if (not kwargs and len(args) <= min(len(self._param_names), 50)
                and not self._secret_params):
            # What json_preview writes for these, without its per-value masking walk, and
            # without json.dumps for each call of a map (a third of a call's driver time).
            values = [_scalar_json(a) for a in args]
            if None not in values:
                text = "{" + ", ".join([k + v for k, v in zip(self._preview_keys, values)
                                        if v is not None]) + "}"
                return text if len(text) <= 2000 else text[:2000] + "…"
        named = {(self._param_names[i] if i < len(self._param_names) else f"arg{i}"): v
                 for i, v in enumerate(args)}
        named.update(kwargs)
        return serializers.json_preview(named)


def _scalar_json(value: Any) -> str | None:
    """``json.dumps(value)`` for an int, float, bool, None or a str under 200 characters;
    None for anything else (the preview then takes the general path)."""
    kind = type(value)
    if kind is int:
        return int.__repr__(value)
    if kind is str:
        return _encode_str(value) if len(value) < 200 else None
    if kind in _SCALARS:
        return json.dumps(value)
    return None


def _new_futures(driver: Driver, ids: list[str], name: str, queue: str,
                 flow_run_id: str) -> list[TaskFuture[Any]]:
    """A map's futures. The cyclic collector is paused meanwhile: a million new objects
    would set off its passes again and again (half the time), and futures hold no cycles."""
    paused = gc.isenabled() and len(ids) > 10_000
    if paused:
        gc.disable()
    try:
        return [TaskFuture(driver, i, name, queue, flow_run_id) for i in ids]
    finally:
        if paused:
            gc.enable()


@dataclass
class _PreparedCall:
    """One call of a submit between validation and sending."""

    id: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    upstream: list[TaskFuture[Any]]
    preview: str
    body: bytes | None = None
    cache_key: CacheKey | None = None


_SENT = _PreparedCall("", (), {}, [], "")


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...


@overload
def task(*, name: str | None = None, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(__fn: Callable[P, R] | None = None, *, name: str | None = None,
         **options: Any) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Make a function a task; works as ``@task`` and ``@task(retries=3, ...)``.

    Args:
        name: the task's name in run listings (default: the function's name).
        **options: any field of :class:`TaskOptions` (retries, retry_delay_seconds,
            timeout_seconds, cache_policy, cache_key_fn, cache_expiration, refresh_cache,
            log_prints, tags, queue, ...).

    Raises:
        pydantic.ValidationError: an option has an invalid value or is unknown.
    """
    unknown = set(options) - set(TaskOptions.model_fields)
    if unknown:
        raise ConfigurationError(f"unknown task option(s) {sorted(unknown)}; valid options are "
                                 f"{sorted(TaskOptions.model_fields)}")

    def decorate(fn: Callable[P, R]) -> Task[P, R]:
        if "tags" in options:
            options["tags"] = frozenset(options["tags"])
        return Task(fn, TaskOptions(name=name or fn.__name__, **options))

    return decorate(__fn) if __fn is not None else decorate
