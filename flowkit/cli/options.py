"""Options shared by several commands, declared once."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

redis_url_option = click.option(
    "--redis-url", envvar="FLOWKIT_REDIS_URL", default=None, metavar="URL",
    help="Redis URL (env FLOWKIT_REDIS_URL). Default: the embedded server under FLOWKIT_HOME.")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def resolve_url(redis_url: str | None) -> str:
    """The URL to use: the option, else the embedded server (started if needed)."""
    if redis_url:
        return redis_url
    from flowkit.embedded import ensure_server
    from flowkit.settings import get_settings

    settings = get_settings()
    return ensure_server(settings.home, port=settings.server_port).url()


def open_client(redis_url: str | None) -> Any:
    """A checked client for the resolved URL."""
    from flowkit.settings import get_settings
    from flowkit.store.connection import connect

    settings = get_settings()
    return connect(resolve_url(redis_url), connect_timeout=settings.connect_timeout,
                   socket_timeout=settings.socket_timeout)


def limits() -> Any:
    """The store limits from the settings (read here, at the edge)."""
    from flowkit.settings import get_settings
    from flowkit.store.limits import Limits

    return Limits.from_settings(get_settings())


def with_client(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: add --redis-url and pass an open client as ``client``."""
    def wrapper(redis_url: str | None, **kwargs: Any) -> Any:
        return fn(client=open_client(redis_url), **kwargs)
    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    wrapper.__click_params__ = list(getattr(fn, "__click_params__", []))  # type: ignore[attr-defined]
    return redis_url_option(wrapper)
