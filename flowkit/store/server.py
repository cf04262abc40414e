"""Who the Redis server is, and whether it may lose flowkit's keys behind its back.

Two questions a driver or worker asks of the server, cheaply (one pipeline each):

- Identity: ``run_id`` changes whenever the server process restarts, ``master_replid`` when a
  replica is promoted; the epoch marker (``keys.EPOCH``, a random token written once with no
  expiry) vanishes with the data. A changed run id alone is not a loss (an append-only server
  restarts with everything), so the verdict is the marker's, and for a promoted replica, the
  existence of the task runs a driver waits on (see ``flowkit/_lost_state.py``).
- Eviction: a server with ``maxmemory`` set and any policy but ``noeviction`` may delete job
  hashes, task runs and function blobs (``volatile-*`` too: flowkit's keys carry TTLs), which
  would lose work silently; it is refused unless the operator says otherwise.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowkit._units import human_bytes
from flowkit.errors import ConfigurationError
from flowkit.store import keys
from flowkit.store.connection import call, url_of

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

#: The only policy under which a server with maxmemory never deletes a key by itself.
SAFE_POLICY = "noeviction"


@dataclass(frozen=True)
class Identity:
    """What says "this is still the server (and the data) we started with"."""

    run_id: str
    replid: str
    epoch: str

    def describe_change(self, now: Identity) -> str:
        """The parts that differ, for messages: "run_id a -> b, ..."."""
        parts = [f"{name} {getattr(self, name)[:8] or '-'} -> {getattr(now, name)[:8] or '-'}"
                 for name in ("run_id", "replid", "epoch")
                 if getattr(self, name) != getattr(now, name)]
        return ", ".join(parts) or "unchanged"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def queue_identity(pipe: Any) -> None:
    """Queue the three reads :func:`read_identity_reply` parses (INFO server, INFO
    replication, GET epoch) on a pipeline."""
    pipe.info("server")
    pipe.info("replication")
    pipe.get(keys.EPOCH)


def read_identity_reply(replies: list[Any]) -> Identity:
    """The identity from the first three replies of a pipeline built by queue_identity."""
    server, replication, epoch = replies[:3]
    return Identity(run_id=_text(server.get("run_id")),
                    replid=_text(replication.get("master_replid")), epoch=_text(epoch))


def establish_identity(client: redis.Redis) -> Identity:
    """Write the epoch marker if the server has none (SET NX: the first writer wins, every
    later one adopts it), and read the identity, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.EPOCH, secrets.token_hex(8), nx=True)
    queue_identity(pipe)
    return read_identity_reply(call(client, pipe.execute)[1:])


def read_identity(client: redis.Redis) -> Identity:
    """The server's identity now (one round trip, no write)."""
    pipe = client.pipeline(transaction=False)
    queue_identity(pipe)
    return read_identity_reply(call(client, pipe.execute))


def memory(client: redis.Redis) -> tuple[int, int, str]:
    """(used_memory, maxmemory, maxmemory_policy) from INFO memory."""
    info = call(client, client.info, "memory")
    return (int(info.get("used_memory", 0)), int(info.get("maxmemory", 0)),
            _text(info.get("maxmemory_policy", SAFE_POLICY)))


def check_eviction(client: redis.Redis, *, allow: bool, who: str) -> None:
    """Refuse a server that may evict flowkit's keys, or warn when ``allow`` says to use it.

    Raises:
        ConfigurationError: maxmemory is set with an evicting policy and ``allow`` is False.
    """
    _, maxmemory, policy = memory(client)
    if maxmemory == 0 or policy == SAFE_POLICY:
        return
    problem = (f"Redis at {url_of(client)} has maxmemory-policy {policy} (maxmemory "
               f"{human_bytes(maxmemory)}), which can evict flowkit's runs, queues and "
               "functions and lose work silently")
    if allow:
        logger.warning("flowkit %s: %s; going on because eviction was allowed "
                       "(FLOWKIT_ALLOW_EVICTION / --allow-eviction)", who, problem)
        return
    raise ConfigurationError(
        f"{problem}: run `CONFIG SET maxmemory-policy noeviction` on it, or give flowkit a "
        "Redis of its own (set FLOWKIT_ALLOW_EVICTION=1 or --allow-eviction to use it anyway)")


