"""``flowkit server start|stop``: the embedded Redis-compatible server."""

from __future__ import annotations

import signal
import socket
import sys
import time
from typing import Any

import click


@click.group()
def server() -> None:
    """Run the embedded Redis-compatible server."""


@server.command("start")
@click.option("--host", default="0.0.0.0", show_default=True,
              help="Address to bind; 0.0.0.0 lets other machines' workers connect.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="TCP port (default: FLOWKIT_SERVER_PORT, 6390).")
@click.option("--dashboard-port", type=click.IntRange(0, 65535), default=4200,
              show_default=True, help="Serve the dashboard beside it on 127.0.0.1 (0: don't).")
def start(host: str, port: int | None, dashboard_port: int) -> None:
    """Run the server in the foreground and print the URL other machines use."""
    from flowkit.embedded import running_server, start_server, stop_server
    from flowkit.settings import get_settings

    settings = get_settings()
    if running_server(settings.home) is not None:
        click.echo("stopping the background embedded server to run it in the foreground", err=True)
        stop_server(settings.home)
    info = start_server(settings.home, port=port or settings.server_port, host=host,
                        detach=False)
    public = socket.gethostname() if host in ("0.0.0.0", "::") else host
    click.echo(f"flowkit server listening on {host}:{info.port} (data in {settings.home / 'data'})")
    click.echo("On other machines, start workers with:")
    click.echo(f"  export FLOWKIT_REDIS_URL='{info.url(public)}'")
    from flowkit.serializers import load_signing_key

    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    key = load_signing_key(secret, settings.home).secret.decode()
    click.echo(f"  export FLOWKIT_SECRET_KEY='{key}'")
    click.echo("  flowkit worker start")
    if dashboard_port:
        _serve_dashboard(info.url("127.0.0.1"), dashboard_port)
    sys.stdout.flush()
    stopping = {"flag": False}

    def stop(signum: int, frame: Any) -> None:
        stopping["flag"] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    import os
    while not stopping["flag"]:
        try:
            os.kill(info.pid, 0)
        except ProcessLookupError:
            click.echo("Error: the server process exited; see "
                       f"{settings.home / 'server.log'}", err=True)
            sys.exit(1)
        time.sleep(0.2)
    os.kill(info.pid, signal.SIGTERM)
    click.echo("server stopped")


def _serve_dashboard(redis_url: str, port: int) -> None:
    """Serve the dashboard from a thread of this process (loopback only)."""
    import threading

    from flowkit.cli.dashboard import build_app, uvicorn_module

    try:
        app = build_app(redis_url)
        uvicorn = uvicorn_module()
    except Exception as exc:  # the server is useful without it: say why and go on
        click.echo(f"dashboard not started: {exc}", err=True)
        return

    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    threading.Thread(target=uvicorn.Server(config).run, name="flowkit-dashboard",
                     daemon=True).start()
    click.echo(f"dashboard on http://127.0.0.1:{port}/runs")


@server.command("stop")
def stop_cmd() -> None:
    """Stop the embedded server recorded in FLOWKIT_HOME."""
    from flowkit.embedded import stop_server
    from flowkit.settings import get_settings

    click.echo("stopped" if stop_server(get_settings().home) else "no embedded server running")
