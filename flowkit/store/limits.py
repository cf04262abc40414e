"""Sizes and lifetimes the store works with: fixed bounds here, configured ones in Limits.

The configured values come from :class:`flowkit.settings.Settings` only (their defaults live
there, once); every library call carries them (see ``base.lua``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flowkit.settings import Settings

#: Replies kept per driver stream before Redis trims the oldest.
REPLY_MAXLEN = 200_000
#: State events kept in the events stream.
EVENTS_MAXLEN = 10_000
#: Log lines kept per flow run.
LOGS_MAXLEN = 100_000
#: Wake-up tokens kept per queue bell.
BELL_MAX_TOKENS = 256
#: How long a single-flight leader holds its cache key before another call may take over.
CACHE_LOCK_MS = 24 * 3600 * 1000
#: Ended ids (cancelled while queued) one claim drops at most before it returns: bounds the
#: call (about 3 us each) when a cancelled run left thousands on the queue.
CLAIM_SKIP_MAX = 1000
#: Version of the state event schema (``flowkit/store/events.py``).
EVENT_VERSION = "2"
#: How long an executor's last claim is remembered, for a repeat of it (ms).
CLAIM_MEMO_MS = 600_000
#: How long an enqueue call sent on a map's stream is remembered, for a resend of it (ms):
#: far longer than a resend can come (the stream's bounded reconnect).
ENQUEUE_MEMO_MS = 600_000
#: Results up to this many bytes (sealed) are kept inside the task run's record rather than
#: in a key of their own: 64 is the longest value Redis keeps in a compact (listpack) hash.
RECORD_RESULT_BYTES = 64

#: The bounds the Lua library gets (``C.<NAME>`` there).
LUA_CONSTANTS: dict[str, int | str] = {
    "REPLY_MAXLEN": REPLY_MAXLEN, "EVENTS_MAXLEN": EVENTS_MAXLEN,
    "BELL_MAX_TOKENS": BELL_MAX_TOKENS, "CACHE_LOCK_MS": CACHE_LOCK_MS,
    "EVENT_VERSION": EVENT_VERSION, "RECORD_RESULT_BYTES": RECORD_RESULT_BYTES,
    "CLAIM_SKIP_MAX": CLAIM_SKIP_MAX, "CLAIM_MEMO_MS": CLAIM_MEMO_MS,
    "ENQUEUE_MEMO_MS": ENQUEUE_MEMO_MS,
    "LOGS_MAXLEN": LOGS_MAXLEN,
}


@dataclass(frozen=True)
class Limits:
    """The configured limits every state change needs, read once from the settings."""

    #: How long results (and failed runs' RQ jobs, for retries) stay in Redis, in ms.
    result_ttl_ms: int
    #: Results up to this many bytes travel inside the completion message.
    inline_bytes: int
    #: Crashes (executor killed, lease expired) before a task run is dead-lettered.
    max_crashes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits of ``settings``."""
        return cls(result_ttl_ms=settings.result_ttl_seconds * 1000,
                   inline_bytes=settings.inline_result_bytes, max_crashes=settings.max_crashes)
