"""``create_app()``: the dashboard, a small Starlette app reading run state from Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from flowkit.dashboard import api, views
from flowkit.errors import StoreConnectionError

if TYPE_CHECKING:
    from flowkit.settings import Settings


def create_app(redis_url: str, settings: Settings | None = None) -> Starlette:
    """The dashboard for the flowkit data in ``redis_url`` (read-only, except the cancel and
    retry actions). It never unpickles anything from Redis.

    Args:
        settings: timeouts and limits (default: read from the environment, once, here).
    """
    import redis.asyncio

    from flowkit.settings import get_settings
    from flowkit.store.connection import connect
    from flowkit.store.limits import Limits

    settings = settings or get_settings()
    connect_timeout, socket_timeout = settings.connect_timeout, settings.socket_timeout
    client = connect(redis_url, connect_timeout=connect_timeout, socket_timeout=socket_timeout)
    async_client = redis.asyncio.Redis.from_url(
        client.flowkit_url, socket_connect_timeout=connect_timeout,  # type: ignore[attr-defined]
        socket_timeout=api.KEEPALIVE_SECONDS + socket_timeout)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await async_client.aclose()
        client.close()

    static = StaticFiles(directory=str(resources.files("flowkit.dashboard") / "static"))
    app = Starlette(routes=[*views.routes, *api.routes, Mount("/static", static, name="static")],
                    exception_handlers={HTTPException: _http_error,
                                        StoreConnectionError: _store_error},
                    lifespan=lifespan)
    app.state.client = client
    app.state.async_client = async_client
    app.state.redis_url = redis_url
    app.state.limits = Limits.from_settings(settings)
    app.state.render_log_line = views.render_log_line
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if _wants_json(request):
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)
    return HTMLResponse(_error_page(exc.status_code, str(exc.detail)), status_code=exc.status_code)


async def _store_error(request: Request, exc: Exception) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": str(exc)}, status_code=503)
    return HTMLResponse(_error_page(503, str(exc)), status_code=503)


def _error_page(status: int, message: str) -> str:
    from html import escape

    return (f"<!doctype html><html><head><title>{status}</title>"
            f"<link rel='stylesheet' href='/static/app.css'></head><body><main class='error'>"
            f"<h1>{status}</h1><p>{escape(message)}</p><p><a href='/runs'>All runs</a></p>"
            f"</main></body></html>")
