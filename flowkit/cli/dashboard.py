"""``flowkit dashboard start``: serve the dashboard (binds to loopback unless told otherwise)."""

from __future__ import annotations

from typing import Any

import click

from flowkit.cli.options import redis_url_option, resolve_url
from flowkit.errors import ConfigurationError


@click.group()
def dashboard() -> None:
    """Run the web dashboard."""


@dashboard.command("start")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; the dashboard can cancel runs, so keep it on loopback "
                   "unless a proxy with authentication stands in front.")
@click.option("--port", type=click.IntRange(1, 65535), default=4200, show_default=True)
@redis_url_option
def start(host: str, port: int, redis_url: str | None) -> None:
    """Serve the dashboard in the foreground."""
    serve(resolve_url(redis_url), host, port)


def build_app(redis_url: str):  # type: ignore[no-untyped-def]
    """The dashboard app, or a clear error when its optional dependencies are missing."""
    try:
        from flowkit.dashboard.app import create_app
    except ImportError as exc:
        raise ConfigurationError(
            f"the dashboard needs {exc.name}, which this environment lacks (installed with "
            f"--no-deps?): pip install {exc.name or 'starlette uvicorn jinja2'}") from None
    from flowkit.settings import get_settings

    return create_app(redis_url, get_settings())


def uvicorn_module() -> Any:
    """uvicorn, or a clear error naming the install command when it is missing."""
    try:
        import uvicorn
    except ImportError:
        raise ConfigurationError("serving the dashboard needs uvicorn, which this environment "
                                 "lacks (installed with --no-deps?): pip install uvicorn") from None
    return uvicorn


def serve(redis_url: str, host: str, port: int) -> None:
    """Run uvicorn with the dashboard until interrupted."""
    uvicorn = uvicorn_module()  # before connecting: a missing piece is reported first
    app = build_app(redis_url)
    click.echo(f"flowkit dashboard on http://{host}:{port}/runs")
    uvicorn.run(app, host=host, port=port, log_level="warning")
