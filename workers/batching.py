"""How many task runs an executor claims at once and when it gives some back (pure policy).

Fast tasks are claimed several at a time so that one round trip serves many; a task that turns
out slow makes the executor give back what it had claimed and not started, so that idle
executors can take it. Outcomes wait a moment to share a round trip with later ones.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class BatchPolicy:
    """The executor's batching decisions, from the durations it has observed."""

    #: Fast tasks are claimed in batches of about this much expected work...
    target_seconds: float = 0.005
    #: ...but never more than this many at once.
    max_batch: int = 64
    #: Tasks up to this long (on average) are claimed one ahead of the one running.
    prefetch_max_seconds: float = 0.05
    #: A task slower than this (and than 3x the average) makes the executor give back the
    #: rest of its batch.
    release_after_seconds: float = 0.005
    #: Outcomes wait at most this long to share a round trip with later ones.
    flush_after_seconds: float = 0.002
    #: Running average of task durations (seconds); starts pessimistic: one at a time.
    mean_seconds: float = 1.0
    #: How many task runs the next claim asks for.
    batch_size: int = 1

    def observe(self, seconds: float) -> None:
        """One task took ``seconds``: update the average and the batch size."""
        self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds
        size = max(1, int(self.target_seconds / max(self.mean_seconds, 1e-6)))
        if self.mean_seconds <= self.prefetch_max_seconds:
            size += 1  # hold the next task in hand: no round trip between two tasks
        self.batch_size = max(1, min(self.max_batch, size))

    def is_slow(self, seconds: float) -> bool:
        """Whether a task that took ``seconds`` was slower than the batch promised (call
        after :meth:`observe`): the rest of the batch should go back to the queue."""
        return seconds > max(self.release_after_seconds, 3 * self.mean_seconds)

    def flush_now(self, waited: float) -> bool:
        """Whether outcomes held for ``waited`` seconds should be recorded now (in the
        background, while the next task runs) rather than wait for more."""
        return waited > self.flush_after_seconds or self.mean_seconds > self.flush_after_seconds

    def next_claim(self, in_hand: int) -> int:
        """How many to claim when ``in_hand`` task runs are still waiting to run."""
        return max(1, self.batch_size - in_hand)
