"""``@flow`` and :class:`Flow`: the driver-side function that submits and waits on tasks."""

from __future__ import annotations

import ctypes
import inspect
import signal
import threading
import time
import traceback
from typing import Any, Callable, Generic, ParamSpec, TypeVar, overload

from flowkit import serializers
from flowkit.context import FlowRunContext, flow_run_ctx
from flowkit.errors import CancelledRun, ConfigurationError, FlowTimeout
from flowkit.states import RunState
from flowkit.store import keys

P = ParamSpec("P")
R = TypeVar("R")


class Flow(Generic[P, R]):
    """A function whose call is a flow run: validated parameters, tracked state, task futures."""

    def __init__(self, fn: Callable[P, R], *, name: str | None = None,
                 log_prints: bool = False, validate_parameters: bool = True,
                 timeout_seconds: float | None = None, description: str | None = None,
                 tags: list[str] | None = None, retries: int = 0,
                 retry_delay_seconds: Any = 0.0) -> None:
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ConfigurationError("flow timeout_seconds must be positive")
        if retries < 0:
            raise ConfigurationError("flow retries must not be negative")
        self.retries = retries
        self.retry_delay_seconds = retry_delay_seconds
        self.fn = fn
        self.name = name or fn.__name__
        self.log_prints = log_prints
        self.validate_parameters = validate_parameters
        self.timeout_seconds = timeout_seconds
        self.description = description or inspect.getdoc(fn)
        self.tags = list(tags or [])
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn
        self._signature = inspect.signature(fn)
        self._model: Any = None

    def __repr__(self) -> str:
        return f"Flow({self.name!r})"

    def with_options(self, **changes: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        current = dict(name=self.name, log_prints=self.log_prints,
                       validate_parameters=self.validate_parameters,
                       timeout_seconds=self.timeout_seconds, description=self.description,
                       tags=self.tags, retries=self.retries,
                       retry_delay_seconds=self.retry_delay_seconds)
        return Flow(self.fn, **{**current, **changes})

    # -- parameters -------------------------------------------------------------------------
    def validate(self, *args: Any, **kwargs: Any) -> inspect.BoundArguments:
        """Bind and validate arguments against the type hints.

        Raises:
            TypeError: unknown or duplicated argument names.
            pydantic.ValidationError: a value does not fit its type hint (after coercion).
        """
        bound = self._signature.bind_partial(*args, **kwargs)
        if not self.validate_parameters:
            bound.apply_defaults()
            return bound
        model = self._parameter_model()
        plain = {name: value for name, value in bound.arguments.items()
                 if self._signature.parameters[name].kind not in (
                     inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)}
        validated = model.model_validate(plain)
        for name in model.model_fields:
            if name in plain or self._signature.parameters[name].default is not inspect._empty:
                bound.arguments[name] = getattr(validated, name)
        return bound

    def _parameter_model(self) -> Any:
        if self._model is None:
            from pydantic import ConfigDict, create_model

            fields: dict[str, Any] = {}
            hints = _type_hints(self.fn)
            for name, param in self._signature.parameters.items():
                if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                    continue
                default = ... if param.default is inspect._empty else param.default
                fields[name] = (hints.get(name, Any), default)
            self._model = create_model(
                f"{self.name}_parameters",
                __config__=ConfigDict(arbitrary_types_allowed=True), **fields)
        return self._model

    # -- running ----------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the flow: validate parameters, record the run, execute, return its value.

        Raises:
            pydantic.ValidationError: invalid parameters (nothing is recorded or queued).
            Exception: the flow's own exception, or that of a task whose failure it did not
                handle.
        """
        bound = self.validate(*args, **kwargs)
        from flowkit.runtime import get_runtime
        from flowkit.store import runs

        runtime = get_runtime()
        parent = flow_run_ctx.get()
        flow_run_id = runs.new_id()
        runs.create_flow_run(runtime.client, flow_run_id, self.name,
                             parameters=serializers.json_preview(dict(bound.arguments)),
                             tags=self.tags, parent=parent.flow_run_id if parent else "",
                             reply_to=runtime.reply_key)
        if self.log_prints:
            from flowkit.logs import install_print_capture

            install_print_capture()
        attempt = 1
        while True:
            ctx = FlowRunContext(flow_run_id, self.name, log_prints=self.log_prints,
                                 parameters=dict(bound.arguments))
            token = flow_run_ctx.set(ctx)
            runtime.flow_started(flow_run_id)
            try:
                value = self._run_with_timeout(bound)
                _raise_unhandled_task_failure(ctx)
            except BaseException as exc:
                state = _final_state(exc)
                if state is RunState.FAILED and attempt <= self.retries:
                    self._announce_retry(runtime, flow_run_id, attempt, exc, ctx)
                    attempt += 1
                    continue
                runs.set_flow_run_state(
                    runtime.client, flow_run_id, RunState.RUNNING, state,
                    error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                    error_message=str(exc), traceback="".join(traceback.format_exception(exc)))
                raise
            finally:
                runtime.flow_ended(flow_run_id)
                flow_run_ctx.reset(token)
            runs.set_flow_run_state(runtime.client, flow_run_id, RunState.RUNNING,
                                    RunState.COMPLETED,
                                    result_preview=serializers.json_preview(value))
            return value

    def _announce_retry(self, runtime: Any, flow_run_id: str, attempt: int, exc: BaseException,
                        ctx: FlowRunContext) -> None:
        """Log the failed attempt, record it on the flow run and wait out the delay."""
        from flowkit import retries as retry_policy
        from flowkit.logs import ship

        delay = retry_policy.delay_before_retry(self.retry_delay_seconds, self.retries, attempt)
        token = flow_run_ctx.set(ctx)
        try:
            ship("WARNING", f"flow run attempt {attempt} failed with {type(exc).__name__}: {exc};"
                            f" retrying in {delay:g} s ({self.retries - attempt + 1} left)")
        finally:
            flow_run_ctx.reset(token)
        runtime.client.hset(keys.flow_run(flow_run_id), mapping={"attempt": attempt + 1})
        time.sleep(delay)

    def _run_with_timeout(self, bound: inspect.BoundArguments) -> R:
        if self.timeout_seconds is None:
            return self.fn(*bound.args, **bound.kwargs)
        in_main = threading.current_thread() is threading.main_thread()
        guard = _AlarmGuard if in_main else _AsyncExceptionGuard
        try:
            with guard(self.timeout_seconds):
                return self.fn(*bound.args, **bound.kwargs)
        except FlowTimeout:
            raise FlowTimeout(f"flow {self.name!r} exceeded timeout_seconds="
                              f"{self.timeout_seconds}") from None


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode (None: take back an
    exception set but not yet delivered). The way to interrupt a flow running elsewhere."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None)


class _AlarmGuard:
    """Main thread: SIGALRM interrupts even blocking calls such as ``time.sleep``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def _fire(self, signum: int, frame: Any) -> None:
        raise FlowTimeout()

    def __enter__(self) -> None:
        self.started = time.monotonic()
        self.previous_handler = signal.signal(signal.SIGALRM, self._fire)
        self.previous_delay = signal.setitimer(signal.ITIMER_REAL, self.seconds)[0]

    def __exit__(self, *exc: Any) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self.previous_handler)
        if self.previous_delay:  # an outer flow's deadline keeps running
            left = self.previous_delay - (time.monotonic() - self.started)
            signal.setitimer(signal.ITIMER_REAL, max(left, 0.001))


class _AsyncExceptionGuard:
    """Other threads: raise FlowTimeout in the flow's thread at its next bytecode."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.thread_id = threading.get_ident()
        self.fired = threading.Event()
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        self.fired.set()
        raise_in_thread(self.thread_id, FlowTimeout)

    def __enter__(self) -> None:
        self.timer.start()

    def __exit__(self, *exc: Any) -> None:
        self.timer.cancel()
        if self.fired.is_set():  # clear an exception set but not yet delivered
            raise_in_thread(self.thread_id, None)


def _final_state(exc: BaseException) -> RunState:
    """The state a flow run ends in when ``exc`` escapes it."""
    if isinstance(exc, (KeyboardInterrupt, CancelledRun)):
        return RunState.CANCELLED
    if isinstance(exc, FlowTimeout):
        return RunState.TIMED_OUT
    return RunState.FAILED


def _type_hints(fn: Callable[..., Any]) -> dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(fn)
    except Exception:
        return {n: p.annotation for n, p in inspect.signature(fn).parameters.items()
                if p.annotation is not inspect._empty and not isinstance(p.annotation, str)}


def _raise_unhandled_task_failure(ctx: FlowRunContext) -> None:
    """Wait for the flow's tasks; raise the first failure nobody looked at."""
    for future in ctx.futures:
        future.wait()
    for future in ctx.futures:
        if not future.observed and not future.state.is_success:
            future.result()


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...


@overload
def flow(*, name: str | None = None, log_prints: bool = False,
         validate_parameters: bool = True, timeout_seconds: float | None = None,
         description: str | None = None, tags: list[str] | None = None, retries: int = 0,
         retry_delay_seconds: Any = 0.0) -> Callable[[Callable[P, R]], Flow[P, R]]: ...


def flow(__fn: Callable[P, R] | None = None, **options: Any
         ) -> Flow[P, R] | Callable[[Callable[P, R]], Flow[P, R]]:
    """Make a function a flow; works as ``@flow`` and ``@flow(name=..., log_prints=True)``.

    Args:
        name: the flow's name (default: the function's name).
        log_prints: send ``print`` output of the flow and its tasks to the run log.
        validate_parameters: validate and coerce arguments with pydantic from type hints.
        timeout_seconds: fail the flow run (TIMED_OUT) after this long.
    """
    allowed = {"name", "log_prints", "validate_parameters", "timeout_seconds", "description",
               "tags", "retries", "retry_delay_seconds"}
    unknown = set(options) - allowed
    if unknown:
        raise ConfigurationError(f"unknown flow option(s) {sorted(unknown)}; valid options are "
                                 f"{sorted(allowed)}")

    def decorate(fn: Callable[P, R]) -> Flow[P, R]:
        return Flow(fn, **options)

    return decorate(__fn) if __fn is not None else decorate
