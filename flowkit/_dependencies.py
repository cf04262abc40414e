"""Which held task runs a finished upstream releases or fails (pure: no Redis, no threads).

A task run submitted with unfinished upstream futures is written to Redis held (not queued).
When every upstream completes it is released to its queue; when one fails, it fails without
running, and so does everything held on it, transitively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Failed:
    """A held task run that will not run, and the upstream whose failure decided it."""

    task_run_id: str
    upstream_id: str


@dataclass
class Decision:
    """What one finished upstream means for the runs held on it."""

    #: Held runs whose upstreams have all completed: queue them.
    ready: list[str] = field(default_factory=list)
    #: Held runs that will never run (their upstream failed, directly or through others).
    failed: list[Failed] = field(default_factory=list)


class DependencyTracker:
    """The held task runs of one driver and the upstreams each waits on."""

    def __init__(self) -> None:
        self._waiting_on: dict[str, set[str]] = {}
        self._dependents: dict[str, list[str]] = {}

    def __len__(self) -> int:
        return len(self._waiting_on)

    def is_held(self, task_run_id: str) -> bool:
        """True while ``task_run_id`` waits for upstreams."""
        return task_run_id in self._waiting_on

    def hold(self, task_run_id: str, upstream_ids: set[str]) -> None:
        """Hold a task run until each of ``upstream_ids`` has finished."""
        self._waiting_on[task_run_id] = set(upstream_ids)
        for upstream_id in upstream_ids:
            self._dependents.setdefault(upstream_id, []).append(task_run_id)

    def held(self) -> list[str]:
        """Every task run still waiting for upstreams."""
        return list(self._waiting_on)

    def forget(self, task_run_id: str) -> None:
        """Stop holding a run that was never written (its submit failed)."""
        for upstream_id in self._waiting_on.pop(task_run_id, set()):
            dependents = self._dependents.get(upstream_id, [])
            if task_run_id in dependents:
                dependents.remove(task_run_id)
            if not dependents:
                self._dependents.pop(upstream_id, None)

    def fail(self, task_run_id: str, upstream_id: str) -> Decision:
        """A held run fails at once (an upstream had already failed when it was submitted);
        what was held on it fails too."""
        decision = Decision()
        if self._waiting_on.pop(task_run_id, None) is not None:
            decision.failed.append(Failed(task_run_id, upstream_id))
            self._cascade(task_run_id, decision)
        return decision

    def finished(self, upstream_id: str, success: bool) -> Decision:
        """An upstream ended (``success``: completed or cached): the held runs it releases
        and those that fail because of it, transitively."""
        decision = Decision()
        for dependent in self._dependents.pop(upstream_id, []):
            waiting = self._waiting_on.get(dependent)
            if waiting is None:
                continue
            waiting.discard(upstream_id)
            if not success:
                del self._waiting_on[dependent]
                decision.failed.append(Failed(dependent, upstream_id))
                self._cascade(dependent, decision)
            elif not waiting:
                del self._waiting_on[dependent]
                decision.ready.append(dependent)
        return decision

    def _cascade(self, failed_id: str, decision: Decision) -> None:
        more = self.finished(failed_id, success=False)
        decision.failed += more.failed


def refuse_summary_upstreams(task_names: list[str], upstreams: list[list[Any]]) -> None:
    """Refuse calls given the future of a run kept as a summary (``keep="summary"``): its
    result reached its driver and is not kept in Redis, where the worker would look.

    Raises:
        ConfigurationError: naming both tasks and what to pass instead.
    """
    from flowkit.errors import ConfigurationError

    for name, ups in zip(task_names, upstreams, strict=True):
        kept = next((u for u in ups if u.keep == "summary"), None)
        if kept is not None:
            raise ConfigurationError(
                f"task {name!r} was given the future of a {kept.task_name!r} run kept as a "
                f"summary (keep='summary'): its result is not kept in Redis for other tasks; "
                f"pass future.result() instead")
