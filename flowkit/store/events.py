"""The state events the library writes to ``flowkit:events`` (schema version 2).

Each entry has ``v`` (the schema version, ``limits.EVENT_VERSION``), ``event``
(``flowkit.task-run.<state>`` or ``flowkit.flow-run.<state>``, states as stored), ``ids``
(the runs that moved to that state, comma-separated) and, for task runs, ``flow_run_id``.
One entry reports every task run of one flow run that one library call moved to one state
(32 runs a claim took, say): version 1 wrote an entry per run, the most of what a task
cost the server. Written inside the same function as the state changes they report
(``base.lua``'s ``emit`` and ``flush_writes``), so none is lost or reported twice.
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


def parse_state_events(fields: dict[str, str]) -> list[StateEvent]:
    """The state events in a stream entry, one per run it names (none when it is not an
    entry this version reads)."""
    name = fields.get("event", "")
    if fields.get("v") != EVENT_VERSION:
        return []
    for prefix, kind in ((TASK_RUN_EVENT, "task"), (FLOW_RUN_EVENT, "flow")):
        if name.startswith(prefix):
            state, flow_run_id = name[len(prefix):], fields.get("flow_run_id", "")
            return [StateEvent(kind, run_id, state, flow_run_id)
                    for run_id in fields.get("ids", "").split(",") if run_id]
    return []
