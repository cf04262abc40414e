"""Redis connections with explicit timeouts and errors that name the URL and what to check."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowkit._units import human_bytes
from flowkit.errors import ConfigurationError, StoreConnectionError, StoreError, StoreFullError

if TYPE_CHECKING:
    import redis

_PASSWORD_IN_URL = re.compile(r"(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")
_SCHEMES = ("redis://", "rediss://", "unix://", "valkey://", "valkeys://")


def redact(url: str) -> str:
    """Hide the password in a Redis URL so it can go into messages and logs."""
    return _PASSWORD_IN_URL.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def _hint(url: str) -> str:
    return ("check that a Redis-compatible server runs there and is reachable from this "
            "machine (host, port, password, firewall), or unset FLOWKIT_REDIS_URL to use the "
            "embedded server")


def connect(url: str, *, connect_timeout: float = 3.0, socket_timeout: float = 10.0,
            check: bool = True) -> redis.Redis:
    """Open a client for ``url`` with bounded timeouts and retries, and PING it.

    Raises:
        ConfigurationError: the URL is malformed.
        StoreConnectionError: nothing answers at the URL within the timeouts.
    """
    import redis
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    if not url.startswith(_SCHEMES):
        raise ConfigurationError(
            f"Redis URL {redact(url)!r} is malformed: it must start with redis://, rediss:// or "
            "unix://, e.g. redis://host:6379/0")
    url = url.replace("valkey://", "redis://", 1).replace("valkeys://", "rediss://", 1)
    try:
        client = redis.Redis.from_url(
            url, socket_connect_timeout=connect_timeout, socket_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30, decode_responses=False)
    except ValueError as exc:
        raise ConfigurationError(f"Redis URL {redact(url)!r} is malformed: {exc}") from None
    client.flowkit_url = url  # type: ignore[attr-defined]
    if check:
        # A quick probe with no retries, so a dead or silent server is reported in seconds.
        probe = redis.Redis.from_url(url, socket_connect_timeout=connect_timeout,
                                     socket_timeout=connect_timeout, retry=Retry(
                                         ExponentialBackoff(), retries=0))
        probe.flowkit_url = url  # type: ignore[attr-defined]
        try:
            call(probe, probe.ping)
        finally:
            probe.close()
    return client


def url_of(client: redis.Redis) -> str:
    """The URL a client was opened with, password redacted."""
    return redact(getattr(client, "flowkit_url", "redis://?"))


def call(client: redis.Redis, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run one redis-py call, turning redis-py errors into flowkit errors that name the URL.

    Returns Any: redis-py types replies as unions of its sync and async shapes.
    """
    import redis

    try:
        return fn(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        url = getattr(client, "flowkit_url", "redis://?")
        raise StoreConnectionError(
            f"cannot reach Redis at {redact(url)} ({exc}): {_hint(url)}") from None
    except redis.ResponseError as exc:
        if isinstance(exc, redis.exceptions.OutOfMemoryError) or _OOM in str(exc):
            raise full_error(client) from None
        raise StoreError(f"Redis at {url_of(client)} answered with an error: {exc}") from exc


#: What Redis and Valkey answer (after the OOM code, which redis-py strips into the type) to
#: a write when used memory is past maxmemory and the policy is noeviction.
_OOM = "command not allowed when used memory > 'maxmemory'"


def full_error(client: redis.Redis) -> StoreFullError:
    """The one error for a server out of memory, with its numbers when it still answers.

    The refused command wrote nothing: the server checks memory before running it, and a
    library function refused this way never started.
    """
    try:
        info = client.info("memory")
        used = human_bytes(int(info.get("used_memory", 0)))
        limit = human_bytes(int(info.get("maxmemory", 0)))
    except Exception:  # the numbers are a courtesy: the error stands without them
        used = limit = "?"
    return StoreFullError(
        f"Redis at {url_of(client)} is full (used {used} of maxmemory {limit}): it refuses "
        "new writes (policy noeviction), nothing of this call was written; free memory "
        "(`flowkit run prune`, a shorter FLOWKIT_RUN_RETENTION_DAYS) or raise maxmemory "
        "(`CONFIG SET maxmemory ...`)")
