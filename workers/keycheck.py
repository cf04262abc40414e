"""The worker's check of its signing key against its queues' probes, at start and after.

A worker that cannot open a queue's probe (store/probes.py) would only fail that queue's
tasks, and take them from workers that could run them: it says why, once, and leaves the
queue out. With no queue left it refuses to start (``flowkit worker start`` exits 2). A probe
that appears later (a worker started before any driver submitted, a driver with a new key)
is seen by the ProbeWatch duty within PROBE_WATCH_SECONDS, for one pipelined GET per period.
"""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any, Protocol

from flowkit.errors import ConfigurationError
from flowkit.serializers import SigningKey, check_env_key, load_signing_key
from flowkit.store import keys, probes
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: Seconds between two reads of the probes of the queues a running worker serves.
PROBE_WATCH_SECONDS = 2.0


def worker_key() -> SigningKey:
    """The key this worker's executors will verify envelopes with (the same settings)."""
    from flowkit.settings import get_settings

    settings = get_settings()
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    check_env_key(secret)
    return load_signing_key(secret, settings.home)


def servable_queues(client: redis.Redis, queues: list[str],
                    key: SigningKey | None = None) -> list[str]:
    """The queues of ``queues`` this worker's key can serve, in order.

    Raises:
        ConfigurationError: it can serve none of them.
    """
    check = probes.check_probes(client, key or worker_key(), queues)
    for refusal in check.refused:
        logger.error("%s", refusal.describe())
    if not check.servable:
        mine = check.refused[0].mine
        theirs = sorted({r.sealed_by or "unknown" for r in check.refused})
        raise ConfigurationError(
            f"this worker's key {mine} opens none of its queues' probes (drivers use key "
            f"{', '.join(theirs)}), so it would fail every task: not starting. Give it the "
            "drivers' FLOWKIT_SECRET_KEY")
    return check.servable


class Supervised(Protocol):
    """What ProbeWatch sees of its supervisor."""

    client: redis.Redis
    worker_id: str
    #: The queues served; executors (re)start with this list.
    queues: list[str]
    #: The executor records, each with a ``process`` (a Popen, or None when not running).
    executors: list[Any]
    stopping: bool

    def request_stop(self, signum: int, frame: Any) -> None:
        """Drain and stop the worker."""


class ProbeWatch:
    """A supervisor duty: follows the probes of the queues the worker was asked to serve.

    A queue whose probes no longer include one of this worker's key is dropped (logged once);
    one that gains such a probe is served again (its drivers now use this key). Either way the
    executors restart with the new list, each after the attempt in hand (what it only claimed
    goes back to the queue). With no queue left, the worker drains and stops.
    """

    delay = PROBE_WATCH_SECONDS
    period = PROBE_WATCH_SECONDS

    def __init__(self, host: Supervised, wanted: list[str], key: SigningKey | None = None) -> None:
        self.host, self.wanted, self.key = host, list(wanted), key or worker_key()

    def run(self) -> None:
        host = self.host
        if host.stopping:
            return
        check = probes.check_probes(host.client, self.key, self.wanted)
        if check.servable == host.queues:
            return
        left = [r for r in check.refused if r.queue in host.queues]
        for refusal in left:
            logger.error("worker %s: %s", host.worker_id, refusal.describe())
        for queue in check.servable:
            if queue not in host.queues:
                logger.info("worker %s: queue %r now has a probe of this worker's key %s; "
                            "serving it", host.worker_id, queue, self.key.key_id)
        host.queues[:] = check.servable  # in place: the supervisor's own list
        if left:
            pipe = host.client.pipeline(transaction=False)
            for refusal in left:  # drivers stop counting this worker for that queue
                pipe.zrem(keys.queue_workers(refusal.queue), host.worker_id)
            call(host.client, pipe.execute)
        if not host.queues:
            logger.error("worker %s: no queue left that this worker's key can serve; "
                         "stopping", host.worker_id)
            host.request_stop(0, None)
            return
        for executor in host.executors:
            process = executor.process
            if process is not None and process.poll() is None:
                executor.restart_requested = True  # a restart at once, not a death
                process.send_signal(signal.SIGTERM)  # restarted with the new queues
