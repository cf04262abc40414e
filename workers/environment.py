"""What a worker's Python environment lacks, told the way a user can act on it.

A task travels by value, but cloudpickle sends a function, class or argument defined in an
importable module by reference: the worker must import that module itself. So must a task body
that imports one. When it cannot, the user sees ``No module named 'x'`` from a machine they may
never have logged into; this module turns that into a :class:`~flowkit.errors.MissingModule`
naming the module, the worker's host and interpreter, and the two ways out.
"""

from __future__ import annotations

import functools
import socket
import sys

from flowkit.errors import MissingModule

#: Sending a module of the user's own by value instead of installing it.
_BY_VALUE = ("if it is a module of your own, send it by value: "
             "cloudpickle.register_pickle_by_value({module}) on the driver before submitting")
#: Where in an attempt a module was missing -> the words for it, and how to ship it instead.
_STAGES = {
    "function": ("to unpickle the task function", _BY_VALUE),
    "arguments": ("to unpickle the task's arguments", _BY_VALUE),
    "upstream": ("to unpickle an upstream task's result", _BY_VALUE),
    "body": ("in its body",
             "ship it with the code (put it on the workers' PYTHONPATH or in the directory "
             "`flowkit worker start` runs in)"),
}


@functools.lru_cache(maxsize=1)
def host() -> str:
    """This worker's host name (as ``flowkit worker ls`` shows it)."""
    return socket.gethostname()


def missing_module(exc: BaseException, task_name: str, stage: str) -> MissingModule | None:
    """A MissingModule for a ModuleNotFoundError met at ``stage`` of an attempt, with the
    original traceback; None for any other error (and for one already explained)."""
    if not isinstance(exc, ModuleNotFoundError) or isinstance(exc, MissingModule):
        return None
    module = exc.name or str(exc)
    where, ship = _STAGES.get(stage, _STAGES["body"])
    top = module.split(".")[0]
    message = (f"task {task_name!r} needs module {module!r} {where}, and it is not installed "
               f"on worker host {host()!r} (Python {sys.executable}): install it on the "
               f"workers (e.g. add it to the worker image or pip install it there), or "
               f"{ship.format(module=top)}")
    # The original traceback, not a chained second copy of it.
    return MissingModule(message, name=exc.name, path=exc.path).with_traceback(exc.__traceback__)
