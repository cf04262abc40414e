"""The one exception hierarchy of flowkit.

Every error flowkit raises derives from :class:`FlowkitError`. Families mix in the builtin that
callers already catch (``ValueError``, ``LookupError``, ``TimeoutError``) so that existing
``except`` clauses keep working.
"""

from __future__ import annotations


class FlowkitError(Exception):
    """Base class of every error raised by flowkit."""


class ConfigurationError(FlowkitError, ValueError):
    """A setting, option or argument has a value flowkit cannot use."""


class SerializationError(FlowkitError, ValueError):
    """A call, argument or result could not be pickled or unpickled."""


class EnvelopeError(SerializationError):
    """A task envelope failed its signature or version check on the worker."""


class StoreError(FlowkitError):
    """Redis answered with an error flowkit did not expect."""


class StoreConnectionError(StoreError, ConnectionError):
    """Redis cannot be reached at the configured URL."""


class StoreFullError(StoreError):
    """Redis refused a write because it reached its ``maxmemory`` (policy ``noeviction``)."""


class RunNotFound(FlowkitError, LookupError):
    """No flow run or task run has the given id."""


class TaskError(FlowkitError):
    """Base class of errors about one task run."""


class TaskFailed(TaskError):
    """A task run failed and its original exception could not be rebuilt in this process.

    Attributes:
        exc_type: dotted name of the remote exception type.
        remote_traceback: the traceback text captured on the worker.
        attempts: how many attempts ran.
    """

    def __init__(self, message: str, *, exc_type: str = "", remote_traceback: str = "",
                 attempts: int = 0) -> None:
        super().__init__(message)
        self.exc_type = exc_type
        self.remote_traceback = remote_traceback
        self.attempts = attempts


class UpstreamFailed(TaskError):
    """A task run did not start because a task it depends on failed."""


class WorkerCrashed(TaskError):
    """The process running a task run died (killed, segfault, ``os._exit``) before it finished."""


class MissingModule(TaskError, ModuleNotFoundError):
    """A task needs a Python module that is not installed on the worker that ran it.

    The message names the module, the worker's host and what to do; ``name`` is the module,
    as on :class:`ModuleNotFoundError` (which ``except ImportError`` still catches)."""


class RunLost(TaskError):
    """Redis no longer has the task run: it restarted empty, a replica without the latest
    writes was promoted, or the keys were evicted or deleted. Submitting it again is safe."""


class TaskTimeout(TaskError, TimeoutError):
    """A task run or a wait for its result exceeded its time limit."""


class FlowTimeout(FlowkitError, TimeoutError):
    """A flow run exceeded its ``timeout_seconds``."""


class CancelledRun(FlowkitError):
    """The run was cancelled before it produced a result."""


class ArgumentTooLarge(ConfigurationError):
    """A task call's pickled arguments exceed FLOWKIT_MAX_ARGUMENT_BYTES (refused at submit)."""


class DriverLost(FlowkitError):
    """The driver of a flow run stopped heartbeating for longer than its partition tolerance."""


class CacheKeyError(FlowkitError, ValueError):
    """An input could not be turned into a deterministic cache key."""


class Retry(FlowkitError):
    """Raised by user code to ask for another attempt of the current task run."""

    def __init__(self, message: str = "retry requested",
                 delay_seconds: float | None = None) -> None:
        super().__init__(message)
        self.delay_seconds = delay_seconds
