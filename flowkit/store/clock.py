"""The Redis server's clock, which flowkit judges leases, heartbeats and due times by.

Every library function reads TIME itself (base.lua); this module is for the Python side:
reads that compare against "now" (is a worker's heartbeat fresh?) and the warning a worker
gives at start when its host's clock is off from the server's.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: A host clock further than this from the server's (seconds) is worth a warning at start.
SKEW_WARN_SECONDS = 2.0


def server_time(client: redis.Redis) -> float:
    """The server's now, in epoch seconds."""
    seconds, micros = call(client, client.time)
    return float(seconds) + float(micros) / 1e6


def host_offset(client: redis.Redis) -> float:
    """How far this host's clock is ahead of the server's (negative: behind), in seconds.

    Measured against the middle of the round trip, so a slow network does not read as skew.
    """
    before = time.time()
    server = server_time(client)
    after = time.time()
    return (before + after) / 2 - server


def warn_if_skewed(client: redis.Redis, what: str = "this host") -> float:
    """Log one warning when ``what``'s clock is off from the server's by more than
    :data:`SKEW_WARN_SECONDS`; returns the offset. flowkit itself only uses the server's
    clock for leases and due times, but task code, logs and timeouts see the host's."""
    offset = host_offset(client)
    if abs(offset) > SKEW_WARN_SECONDS:
        logger.warning("the clock of %s is %+.1f s off from the Redis server's; flowkit "
                       "judges leases and due times by the server's clock, but timestamps "
                       "written by task code will be off (run NTP on this host)", what, offset)
    return offset
