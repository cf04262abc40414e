"""The result cache's reads and its clearing (entries are written when runs end: cache.lua)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from flowkit.store import keys
from flowkit.store.connection import call

if TYPE_CHECKING:
    import redis

#: Cache entries deleted per DEL when clearing.
CLEAR_BATCH = 500


def cache_entry_exists(client: redis.Redis, cache_key: str) -> bool:
    """Whether a result is stored under ``cache_key``."""
    return bool(call(client, client.exists, keys.cache(cache_key)))


def clear_cache(client: redis.Redis, task_name: str | None = None) -> int:
    """Delete cached results, all or those one task wrote; returns how many were deleted."""
    if task_name is not None:
        index_keys = [keys.cache_index(task_name)]
    else:
        index_keys = [k.decode() for k in call(client, lambda: list(
            client.scan_iter(match=keys.CACHE_INDEX_PREFIX + "*", count=1000)))]
    deleted = 0
    for index in index_keys:
        cache_keys = [k.decode() for k in call(client, client.smembers, index)]
        for start in range(0, len(cache_keys), CLEAR_BATCH):
            chunk = [keys.cache(k) for k in cache_keys[start:start + CLEAR_BATCH]]
            deleted += int(call(client, client.delete, *chunk))
        call(client, client.delete, index)
    return deleted
