"""The state events the library writes to ``flowkit:events`` (schema version 1).

Each entry has ``v`` (the schema version, ``limits.EVENT_VERSION``), ``event``
(``flowkit.task-run.<state>`` or ``flowkit.flow-run.<state>``, states as stored), ``id`` (the
run) and, for task runs, ``flow_run_id``. Written inside the same function as the state
change they report (``base.lua``'s ``emit``), so none is lost or reported twice.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowkit.store.limits import EVENT_VERSION

#: Event name prefixes (the state follows); the Lua library gets them as C.*_RUN_EVENT.
TASK_RUN_EVENT = "flowkit.task-run."
FLOW_RUN_EVENT = "flowkit.flow-run."


@dataclass(frozen=True)
class StateEvent:
    """One state change, as read back from the events stream."""

    kind: str  #: "task" or "flow"
    id: str
    state: str
    flow_run_id: str  #: the task run's flow run ("" for flow run events)


def parse_state_event(fields: dict[str, str]) -> StateEvent | None:
    """The state event in a stream entry, or None when it is not one this version reads."""
    name = fields.get("event", "")
    if fields.get("v") != EVENT_VERSION:
        return None
    for prefix, kind in ((TASK_RUN_EVENT, "task"), (FLOW_RUN_EVENT, "flow")):
        if name.startswith(prefix):
            return StateEvent(kind, fields.get("id", ""), name[len(prefix):],
                              fields.get("flow_run_id", ""))
    return None
