"""The worker's start-up check of its signing key against its queues' probes.

A worker that cannot open a queue's probe (store/probes.py) would only fail that queue's
tasks, and take them from workers that could run them: it says why, once, and leaves the
queue out. With no queue left it refuses to start (``flowkit worker start`` exits 2).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flowkit.errors import ConfigurationError
from flowkit.serializers import SigningKey, check_env_key, load_signing_key
from flowkit.store import probes

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)


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
