"""Does Redis still have what a waiting driver waits on? The verdict behind ``RunLost``.

A driver whose server restarted empty (or was flushed), or whose clients were pointed at a
replica promoted before the latest writes reached it, would otherwise wait forever: no
worker will ever report on a task run the server does not have. While a driver waits, its
reply listener calls :meth:`LostStateWatch.check` once per period: one pipeline with the
server's identity (``flowkit/store/server.py``) and an EXISTS per task run probed.

- The epoch marker vanished or changed: everything from before is gone; every pending
  future whose task run is not there (all of them, unless submitted since) is lost.
- The server is another one (run id or replication id changed) but kept the marker: it
  restarted with its data, or a replica took over. The task runs it lacks are lost (the
  replica never saw them); the others carry on.
- Same server, a task run missing: deleted or evicted. Judged on two checks in a row, so
  that a task run whose submit is still being written is not mistaken for a lost one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flowkit.store import keys, server
from flowkit.store.connection import call, url_of

if TYPE_CHECKING:
    import redis

#: Seconds between two checks while a driver waits.
CHECK_SECONDS = 1.0
#: Pending task runs probed per check (the oldest first); all of them when the server changed.
PROBE_RUNS = 256


@dataclass
class Verdict:
    """Which task runs are lost, and the cause to tell their futures."""

    cause: str
    lost: list[str] = field(default_factory=list)
    #: True when the server lost everything: what the driver wrote once (function blobs,
    #: its ad-hoc flow run) must be written again, and the lost runs have nothing to update.
    everything: bool = False


class LostStateWatch:
    """Compares the server with what it was when the driver started (or last rebaselined)."""

    def __init__(self, client: redis.Redis, baseline: server.Identity) -> None:
        self.client, self.baseline = client, baseline
        self._suspects: set[str] = set()

    def check(self, pending: list[str],
              everything: Callable[[], list[str]] | None = None) -> Verdict | None:
        """One round trip (two when the server changed); None while nothing is lost.
        ``everything``: all pending ids, asked for only when the server changed (a driver
        with a million pending passes the oldest few as ``pending`` and this)."""
        probed = pending[:PROBE_RUNS]
        now, missing = self._probe(probed)
        changed = now != self.baseline
        if changed and (len(pending) > len(probed) or everything is not None):
            _, missing = self._probe(everything() if everything is not None else pending)
        if now.epoch != self.baseline.epoch:
            return self._everything_lost(now, missing)
        if changed:
            change = self.baseline.describe_change(now)
            self.baseline, self._suspects = now, set()
            if not missing:
                return None  # restarted with its data, or a replica that had everything
            return Verdict(
                f"Redis at {url_of(self.client)} is not the server it was ({change}) and has "
                "no record of this task run: a replica was promoted before the latest writes "
                "reached it, or the server came back from an older copy of its data", missing)
        lost = [i for i in missing if i in self._suspects]
        self._suspects = set(missing) - set(lost)
        if not lost:
            return None
        return Verdict(f"Redis at {url_of(self.client)} no longer has this task run: its keys "
                       "were deleted or evicted (see `flowkit worker start` on eviction)", lost)

    def _probe(self, ids: list[str]) -> tuple[server.Identity, list[str]]:
        pipe = self.client.pipeline(transaction=False)
        server.queue_identity(pipe)
        for task_run_id in ids:
            pipe.exists(keys.task_run(task_run_id))
        replies = call(self.client, pipe.execute)
        missing = [i for i, found in zip(ids, replies[3:]) if not found]
        return server.read_identity_reply(replies), missing

    def _everything_lost(self, now: server.Identity, missing: list[str]) -> Verdict:
        was = "is gone" if not now.epoch else "was replaced"
        change = self.baseline.describe_change(now)
        self.baseline, self._suspects = server.establish_identity(self.client), set()
        return Verdict(f"Redis at {url_of(self.client)} lost flowkit's state: it restarted "
                       f"empty or was flushed (the flowkit epoch marker {was}; {change})",
                       missing, everything=True)
