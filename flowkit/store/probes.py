"""Signed probes: a worker learns at start whether it holds the key of its queues' drivers.

A worker whose ``FLOWKIT_SECRET_KEY`` differs from the drivers' can verify no envelope: every
task it claims fails with a signature error while a worker with the right key sits idle. So
each driver seals a small probe per queue it submits to: field ``<key id>`` of the hash
``flowkit:probe:<queue>``, the queue's name sealed with the driver's key, rewritten at most
once a minute per queue (one HSET, not a round trip per task). A worker reads the probes of
its queues at start (one pipeline). It serves a queue with no probe (nothing is known) or with
a probe of its own key that opens; a queue whose probes are all of other keys is left to the
workers that hold them, with a line naming the queue and the key ids. One probe per key, not
one per queue: a single driver with a stray key cannot make the right workers leave a queue.
"""

from __future__ import annotations

import hmac
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flowkit import serializers
from flowkit.errors import EnvelopeError
from flowkit.store import keys
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

#: Seconds a driver waits before rewriting a queue's probe (a submit refreshes it after that).
REFRESH_SECONDS = 60.0
#: Seconds a probe lives without a driver refreshing it: a week-old key says little.
PROBE_TTL_SECONDS = 7 * 24 * 3600
_PAYLOAD = b"flowkit-probe\0"

#: When each driver connection last wrote each (key id, queue)'s probe (monotonic seconds).
_written: weakref.WeakKeyDictionary[redis.Redis, dict[tuple[str, str], float]] = (
    weakref.WeakKeyDictionary())


def _payload(queue: str) -> bytes:
    return _PAYLOAD + queue.encode()


def refresh_probe(client: redis.Redis, key: serializers.SigningKey, queue: str,
                  now: float | None = None) -> bool:
    """Driver side: seal ``queue``'s probe with ``key`` unless this connection did so less
    than REFRESH_SECONDS ago; True when it wrote."""
    now = time.monotonic() if now is None else now
    written = _written.setdefault(client, {})
    last = written.get((key.key_id, queue))
    if last is not None and now - last < REFRESH_SECONDS:
        return False
    pipe = client.pipeline(transaction=False)
    pipe.hset(keys.probe(queue), key.key_id, serializers.seal(key, _payload(queue)))
    pipe.expire(keys.probe(queue), PROBE_TTL_SECONDS)
    call(client, pipe.execute)
    written[(key.key_id, queue)] = now
    return True


@dataclass(frozen=True)
class Refusal:
    """A queue whose probe this worker's key cannot open."""

    queue: str
    #: The key ids of the queue's probes (none of them this worker's, or none opens).
    sealed_by: str
    mine: str

    def describe(self) -> str:
        """One line: which queue, which keys, what to do."""
        theirs = f"key {self.sealed_by}" if self.sealed_by else "an unknown key"
        return (f"queue {self.queue!r}: its drivers sign tasks with {theirs} and this worker "
                f"has key {self.mine}, so every task there would fail its signature check; "
                f"not taking work from {self.queue!r}. Start the worker with the drivers' "
                "FLOWKIT_SECRET_KEY")


@dataclass(frozen=True)
class ProbeCheck:
    """What the probes of a worker's queues say about its key."""

    servable: list[str]
    refused: list[Refusal] = field(default_factory=list)


def check_probes(client: redis.Redis, key: serializers.SigningKey,
                 queues: list[str]) -> ProbeCheck:
    """Worker side: read the probes of ``queues`` in one round trip and sort the queues into
    those this key can serve (probe opens, or no probe yet) and those it cannot."""
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        pipe.hgetall(keys.probe(queue))
    found = call(client, pipe.execute)
    servable: list[str] = []
    refused: list[Refusal] = []
    for queue, fields in zip(queues, found):
        own = fields.get(key.key_id.encode())
        if not fields or (own is not None and _opens(key, own, queue)):
            servable.append(queue)
        else:
            theirs = sorted(k.decode("ascii", "replace") for k in fields)
            refused.append(Refusal(queue, ", ".join(theirs), key.key_id))
    return ProbeCheck(servable, refused)


def _opens(key: serializers.SigningKey, blob: bytes, queue: str) -> bool:
    try:
        payload = serializers.unseal(key, blob)
    except EnvelopeError:
        return False
    return hmac.compare_digest(payload, _payload(queue))


def forget_written(client: redis.Redis) -> None:
    """The server lost state: the probes this process wrote are gone, write them again."""
    _written.pop(client, None)
