"""The ``flowkit`` command line: thin commands that parse, call the library and render."""

from __future__ import annotations

import sys
from typing import Any

import click

from flowkit._version import __version__
from flowkit.cli import cache, dashboard, runs, server, worker
from flowkit.errors import ConfigurationError, FlowkitError, StoreConnectionError

#: Exit code for Redis unreachable or misconfigured.
EXIT_CONNECTION = 2


class _Group(click.Group):
    """Turns flowkit errors into one clear line on stderr and a non-zero exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (StoreConnectionError, ConfigurationError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(EXIT_CONNECTION)
        except FlowkitError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="flowkit")
def cli() -> None:
    """flowkit: Python functions as distributed, observable work on Redis worker pools."""


cli.add_command(worker.worker)
cli.add_command(server.server)
cli.add_command(runs.run)
cli.add_command(runs.queue)
cli.add_command(cache.cache)
cli.add_command(dashboard.dashboard)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="flowkit")
