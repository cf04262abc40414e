"""Running a flow as its driver: record the flow run, call the function (with its timeout and
retries), wait for its tasks, record the final state.

:func:`run_flow` is the entry point for anything that runs a flow by name and parameters (a
worker running a deployment's flow run); calling a :class:`~flowkit.flows.Flow` goes through
the same :func:`run_bound`.
"""

from __future__ import annotations

import inspect
import signal
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any

from flowkit import serializers
from flowkit._ids import new_id
from flowkit._threads import raise_in_thread
from flowkit.context import FlowRunContext, flow_run_ctx
from flowkit.errors import CancelledRun, FlowTimeout
from flowkit.states import RunState
from flowkit.store import flow_runs

if TYPE_CHECKING:
    from flowkit.driver import Driver
    from flowkit.flows import Flow


def run_flow(flow: Flow[..., Any], parameters: dict[str, Any],
             flow_run_id: str | None = None) -> Any:
    """Run ``flow`` with ``parameters`` (validated like a call's arguments) as flow run
    ``flow_run_id``: created here when new, moved to RUNNING when it was recorded already
    (scheduled by a deployment, say).

    Raises:
        pydantic.ValidationError: invalid parameters (nothing is recorded or queued).
        Exception: what the flow raised, or an unhandled task failure.
    """
    return run_bound(flow, flow.validate(**parameters), flow_run_id)


def run_bound(flow: Flow[..., Any], bound: inspect.BoundArguments,
              flow_run_id: str | None = None) -> Any:
    """Run ``flow`` on arguments it has validated (see :func:`run_flow`)."""
    from flowkit.driver import get_driver

    driver = get_driver()
    flow_run_id = flow_run_id or new_id()
    _begin(driver, flow, bound, flow_run_id)
    if flow.log_prints:
        from flowkit.logs import install_print_capture

        install_print_capture()
    attempt = 1
    while True:
        ctx = FlowRunContext(flow_run_id, flow.name, log_prints=flow.log_prints,
                             parameters=dict(bound.arguments))
        token = flow_run_ctx.set(ctx)
        driver.flow_started(flow_run_id)
        try:
            value = _run_with_timeout(flow, bound)
            _raise_unhandled_task_failure(ctx)
        except BaseException as exc:
            state = _final_state(exc)
            _settle_submissions(driver, flow_run_id, exc)
            if state is RunState.FAILED and attempt <= flow.retries:
                _announce_retry(driver, flow, flow_run_id, attempt, exc, ctx)
                attempt += 1
                continue
            if isinstance(exc, KeyboardInterrupt):
                # The flow and all its task runs end CANCELLED in one call; the flow's thread
                # is forgotten first, so the cancel's notice cannot interrupt it once more.
                from flowkit._interrupts import cancel_flow_after_interrupt

                driver.flow_ended(flow_run_id)
                cancel_flow_after_interrupt(driver, flow_run_id)
            flow_runs.transition_flow_run(
                driver.client, driver.limits, flow_run_id, state,
                error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                error_message=str(exc), traceback="".join(traceback.format_exception(exc)))
            raise
        finally:
            driver.flow_ended(flow_run_id)
            flow_run_ctx.reset(token)
        flow_runs.transition_flow_run(driver.client, driver.limits, flow_run_id,
                                      RunState.COMPLETED,
                                      result_preview=serializers.json_preview(value))
        return value


def _begin(driver: Driver, flow: Flow[..., Any], bound: inspect.BoundArguments,
           flow_run_id: str) -> None:
    """Record the flow run as RUNNING: a new one, or one that was recorded before it ran."""
    parent = flow_run_ctx.get()
    created = flow_runs.create_flow_run(
        driver.client, driver.limits, flow_run_id, flow.name,
        parameters=serializers.json_preview(dict(bound.arguments)), tags=flow.tags,
        parent=parent.flow_run_id if parent else "", reply_to=driver.reply_key)
    if not created:
        flow_runs.transition_flow_run(driver.client, driver.limits, flow_run_id,
                                      RunState.RUNNING)


def _announce_retry(driver: Driver, flow: Flow[..., Any], flow_run_id: str, attempt: int,
                    exc: BaseException, ctx: FlowRunContext) -> None:
    """Log the failed attempt, record it on the flow run and wait out the delay."""
    from flowkit import retries as retry_policy
    from flowkit.logs import ship

    delay = retry_policy.delay_before_retry(flow.retry_delay_seconds, flow.retries, attempt)
    token = flow_run_ctx.set(ctx)
    try:
        ship("WARNING", f"flow run attempt {attempt} failed with {type(exc).__name__}: {exc};"
                        f" retrying in {delay:g} s ({flow.retries - attempt + 1} left)")
    finally:
        flow_run_ctx.reset(token)
    flow_runs.record_flow_attempt(driver.client, flow_run_id, attempt + 1)
    time.sleep(delay)


def _run_with_timeout(flow: Flow[..., Any], bound: inspect.BoundArguments) -> Any:
    if flow.timeout_seconds is None:
        return flow.fn(*bound.args, **bound.kwargs)
    in_main = threading.current_thread() is threading.main_thread()
    guard = _AlarmGuard if in_main else _AsyncExceptionGuard
    try:
        with guard(flow.timeout_seconds):
            return flow.fn(*bound.args, **bound.kwargs)
    except FlowTimeout:
        raise FlowTimeout(f"flow {flow.name!r} exceeded timeout_seconds="
                          f"{flow.timeout_seconds}") from None


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


def _settle_submissions(driver: Driver, flow_run_id: str, exc: BaseException) -> None:
    """The flow's maps still queueing in the background: a cancelled or interrupted flow
    stops them (nothing more goes out); one that failed queues them whole first, as if
    ``map()`` had queued everything before returning."""
    if isinstance(exc, (KeyboardInterrupt, CancelledRun)):
        driver.submissions.stop({flow_run_id}, f"cancelled: its flow run {flow_run_id} was "
                                               "cancelled while its map was being queued")
    else:
        driver.submissions.finish({flow_run_id})


def _final_state(exc: BaseException) -> RunState:
    """The state a flow run ends in when ``exc`` escapes it."""
    if isinstance(exc, (KeyboardInterrupt, CancelledRun)):
        return RunState.CANCELLED
    if isinstance(exc, FlowTimeout):
        return RunState.TIMED_OUT
    return RunState.FAILED


def _raise_unhandled_task_failure(ctx: FlowRunContext) -> None:
    """Wait for the flow's tasks; raise the first failure nobody looked at."""
    for future in ctx.futures:
        future.wait()
    for future in ctx.futures:
        if not future.observed and not future.state.is_success:
            future.result()
