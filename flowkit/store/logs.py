"""Run logs: one capped stream per flow run (plain writes: no run state)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowkit.store import keys
from flowkit.store._codec import decode
from flowkit.store.connection import call
from flowkit.store.limits import LOGS_MAXLEN, REPLY_MAXLEN

if TYPE_CHECKING:
    import redis


def append_log(client: redis.Redis | Any, flow_run_id: str, record: dict[Any, Any],
               reply_to: str = "") -> None:
    """Add one log line to the flow run's log stream (and to the driver's reply stream)."""
    pipe = client.pipeline(transaction=False)
    pipe.xadd(keys.logs(flow_run_id), record, maxlen=LOGS_MAXLEN, approximate=True)
    if reply_to:
        pipe.xadd(reply_to, {"kind": "log", **record}, maxlen=REPLY_MAXLEN, approximate=True)
    call(client, pipe.execute)


def read_logs(client: redis.Redis, flow_run_id: str, after: str = "-",
              count: int = 10_000) -> list[tuple[str, dict[str, str]]]:
    """Log lines of a flow run after stream id ``after`` (exclusive), oldest first."""
    start = after if after == "-" else f"({after}"
    entries = call(client, client.xrange, keys.logs(flow_run_id), start, "+", count)
    return [(entry_id.decode(), decode(fields)) for entry_id, fields in entries]


def tail_logs(client: redis.Redis, flow_run_id: str, count: int = 200
              ) -> list[tuple[str, dict[str, str]]]:
    """The last ``count`` log lines of a flow run, oldest first."""
    entries = call(client, client.xrevrange, keys.logs(flow_run_id), "+", "-", count)
    return [(entry_id.decode(), decode(fields)) for entry_id, fields in reversed(entries)]
