"""Run one claimed attempt: verify, unpickle, execute with a time limit, decide the outcome."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flowkit import retries as retry_policy
from flowkit import serializers
from flowkit.context import TaskRunContext, task_run_ctx
from flowkit.errors import EnvelopeError, Retry, SerializationError, TaskTimeout
from flowkit.futures import ResultRef
from flowkit.logs import install_print_capture
from flowkit.store import keys, task_runs
from flowkit.store.attempts import Claim, Outcome
from flowkit.workers.environment import missing_module
from flowkit.workers.slots import Slot

if TYPE_CHECKING:
    import redis

#: A claimed run that starts this much later than its claim gets its start time corrected.
RESTAMP_AFTER_SECONDS = 0.005
#: Task functions kept unpickled per executor, by digest (most tasks repeat).
_FUNCTION_CACHE_SIZE = 256


@dataclass
class ExecutionContext:
    """What an executor shares across attempts."""

    client: redis.Redis
    key: serializers.SigningKey
    default_queue: str
    functions: dict[str, Callable[..., Any]] = field(default_factory=dict)
    #: Tells the supervisor which attempt runs and its hard deadline (None outside workers).
    slot: Slot | None = None


@dataclass
class Attempt:
    """The outcome of one attempt and the queue it came from."""

    outcome: Outcome
    queue: str


def _qualified(exc_type: type[BaseException]) -> str:
    return f"{exc_type.__module__}.{exc_type.__qualname__}"


def _load_function(ctx: ExecutionContext, digest: str) -> Callable[..., Any]:
    cached = ctx.functions.get(digest)
    if cached is not None:
        return cached
    blob: Any = ctx.client.get(keys.function(digest))
    if blob is None:
        raise EnvelopeError(f"task function {digest[:12]} is missing from Redis (expired?); "
                            "submit the task again")
    if hashlib.sha256(blob).hexdigest() != digest:
        raise EnvelopeError(f"task function {digest[:12]} does not match its digest")
    fn: Callable[..., Any] = serializers.loads(blob)
    if len(ctx.functions) >= _FUNCTION_CACHE_SIZE:
        ctx.functions.pop(next(iter(ctx.functions)))
    ctx.functions[digest] = fn
    return fn


def _resolve_refs(ctx: ExecutionContext, value: Any, depth: int = 0) -> Any:
    if isinstance(value, ResultRef):
        data: Any = task_runs.read_result(ctx.client, value.task_run_id)
        if data is None:
            raise EnvelopeError(f"the result of upstream task run {value.task_run_id} is not in "
                                "Redis (expired?)")
        return serializers.loads(serializers.unseal(ctx.key, data))
    if depth > 3:
        return value
    if isinstance(value, (list, tuple)):
        items = [_resolve_refs(ctx, v, depth + 1) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)
    if isinstance(value, dict):
        return {k: _resolve_refs(ctx, v, depth + 1) for k, v in value.items()}
    return value


class _Alarm:
    """A soft time limit: SIGALRM raises TaskTimeout in the task's (main) thread."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds if threading.current_thread() is threading.main_thread() else None

    def __enter__(self) -> None:
        if self.seconds:
            signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)

    def _fire(self, signum: int, frame: Any) -> None:
        raise TaskTimeout(f"task exceeded timeout_seconds={self.seconds}")

    def __exit__(self, *exc: Any) -> None:
        if self.seconds:
            signal.setitimer(signal.ITIMER_REAL, 0)


def run_attempt(ctx: ExecutionContext, claimed: Claim) -> Attempt:
    """Execute one attempt of a claimed task run and describe its outcome."""
    started = time.time()
    attempt = _run_attempt(ctx, claimed)
    if started - claimed.claimed_at > RESTAMP_AFTER_SECONDS:
        attempt.outcome.started = started  # it waited in a batch: record the real start
    return attempt


def _run_attempt(ctx: ExecutionContext, claimed: Claim) -> Attempt:
    queue, stage, task_name = ctx.default_queue, "envelope", "?"
    try:
        opened = serializers.open_envelope(ctx.key, claimed.envelope, claimed.body or b"")
        task_name, stage = opened.header.get("task", "?"), "function"
        fn = _load_function(ctx, opened.header["fn"])
        stage = "arguments"
        args, kwargs, opts = serializers.loads(opened.body)
        queue, stage = opts.get("queue") or queue, "upstream"
        args = _resolve_refs(ctx, args)
        kwargs = _resolve_refs(ctx, kwargs)
    except Exception as exc:
        return Attempt(_failure(ctx, missing_module(exc, task_name, stage) or exc,
                                retry_delay=None), queue)
    run_ctx = TaskRunContext(claimed.id, claimed.flow_run_id, opened.header.get("task", "?"),
                             claimed.attempt, claimed.reply_to, bool(opts.get("log_prints")),
                             client=ctx.client)
    if run_ctx.log_prints:
        install_print_capture()
    token = task_run_ctx.set(run_ctx)
    timeout = opts.get("timeout_seconds")
    if ctx.slot is not None:
        now = time.time()
        retry = _hard_timeout_retry(opts, claimed, run_ctx.task_name, fn) if timeout else None
        ctx.slot.start(claimed.id, now, now + timeout if timeout else 0.0,
                       -1.0 if retry is None else retry)
    try:
        with _Alarm(timeout):
            value = fn(*args, **kwargs)
    except TaskTimeout as exc:
        return Attempt(_failure(ctx, exc, _retry_for(opts, claimed, run_ctx.task_name, fn, exc),
                                "timed_out"), queue)
    except Exception as exc:
        exc = missing_module(exc, run_ctx.task_name, "body") or exc
        return Attempt(_failure(ctx, exc, _retry_for(opts, claimed, run_ctx.task_name, fn, exc)),
                       queue)
    finally:
        task_run_ctx.reset(token)
        if ctx.slot is not None:
            ctx.slot.clear()
    try:
        payload = serializers.seal(ctx.key, serializers.dumps_result(value))
    except SerializationError as exc:
        return Attempt(_failure(ctx, exc, retry_delay=None), queue)
    return Attempt(Outcome("completed", payload), queue)


def _retry_for(opts: dict[str, Any], claimed: Claim, task_name: str, fn: Callable[..., Any],
               exc: BaseException) -> float | None:
    """The delay before the next attempt, or None when this failure is final."""
    retries = int(opts.get("retries") or 0)
    task = retry_policy.TaskInfo(task_name, fn)
    task_run = retry_policy.TaskRunInfo(claimed.id, claimed.flow_run_id, claimed.attempt, retries)
    if isinstance(exc, Retry):  # the task asked for it: only the retry budget applies
        if claimed.attempt > retries:
            return None
        if exc.delay_seconds is not None:
            return exc.delay_seconds
    elif not retry_policy.should_retry(opts, claimed.attempt, exc, task, task_run):
        return None
    return retry_policy.delay_before_retry(opts.get("retry_delay_seconds"), retries,
                                           claimed.attempt, opts.get("retry_jitter_factor"))


def _hard_timeout_retry(opts: dict[str, Any], claimed: Claim, task_name: str,
                        fn: Callable[..., Any]) -> float | None:
    """The retry decision for this attempt if a hard timeout kills it, made now: the
    supervisor that kills it cannot (the retry options live in the envelope). None: no retry
    (also when the user's retry condition itself fails)."""
    timeout = opts.get("timeout_seconds")
    try:
        return _retry_for(opts, claimed, task_name, fn,
                          TaskTimeout(f"task exceeded timeout_seconds={timeout}"))
    except Exception:
        return None


def _user_traceback(exc: BaseException) -> str:
    """The traceback text without this module's own frame on top."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code.co_filename == __file__ and tb.tb_next is not None:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _failure(ctx: ExecutionContext, exc: BaseException, retry_delay: float | None,
             state: str = "failed") -> Outcome:
    try:
        pickled = serializers.seal(ctx.key, serializers.dumps_result(exc))
    except Exception:
        pickled = b""  # the driver falls back to TaskFailed with the type name and message
    return Outcome(state, error_type=_qualified(type(exc)), error_message=str(exc),
                   traceback=_user_traceback(exc), exception=pickled,
                   retry_delay=retry_delay)
