"""flowkit: plain Python functions become resilient, observable, distributed work.

Importing flowkit opens no connection, reads no settings and starts no thread.
"""

from flowkit._version import __version__ as __version__
from flowkit.cancellation import CancelCounts as CancelCounts
from flowkit.cancellation import cancel as cancel
from flowkit.control import cancel_flow_run as cancel_flow_run
from flowkit.errors import CancelledRun as CancelledRun
from flowkit.errors import ConfigurationError as ConfigurationError
from flowkit.errors import FlowkitError as FlowkitError
from flowkit.errors import FlowTimeout as FlowTimeout
from flowkit.errors import Retry as Retry
from flowkit.errors import RunLost as RunLost
from flowkit.errors import SerializationError as SerializationError
from flowkit.errors import StoreConnectionError as StoreConnectionError
from flowkit.errors import StoreFullError as StoreFullError
from flowkit.errors import TaskFailed as TaskFailed
from flowkit.errors import TaskTimeout as TaskTimeout
from flowkit.errors import UpstreamFailed as UpstreamFailed
from flowkit.errors import WorkerCrashed as WorkerCrashed
from flowkit.flows import Flow as Flow
from flowkit.flows import flow as flow
from flowkit.futures import TaskFuture as TaskFuture
from flowkit.futures import as_completed as as_completed
from flowkit.futures import wait as wait
from flowkit.logs import get_run_logger as get_run_logger
from flowkit.retries import exponential_backoff as exponential_backoff
from flowkit.states import RunState as RunState
from flowkit.tasks import Task as Task
from flowkit.tasks import task as task
from flowkit.tasks import unmapped as unmapped

__all__ = [
    "CancelCounts", "CancelledRun", "ConfigurationError", "Flow", "FlowTimeout", "FlowkitError",
    "Retry", "RunState", "SerializationError", "StoreConnectionError", "Task", "TaskFailed",
    "TaskFuture", "TaskTimeout", "UpstreamFailed", "WorkerCrashed", "__version__",
    "as_completed", "cancel", "cancel_flow_run", "exponential_backoff", "flow",
    "get_run_logger", "task", "unmapped", "wait",
]
