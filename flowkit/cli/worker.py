"""``flowkit worker start`` and ``flowkit worker ls``."""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

import click

from flowkit.cli import render
from flowkit.cli.options import json_option, redis_url_option, resolve_url, with_client


@click.group()
def worker() -> None:
    """Run and list workers."""


@worker.command("start")
@click.option("--queue", "-q", "queues", multiple=True, metavar="NAME",
              help="Queue to serve; repeat for several, highest priority first. "
                   "Default: FLOWKIT_DEFAULT_QUEUE (default).")
@click.option("--concurrency", "-c", type=click.IntRange(1, 1024), default=None,
              help="Executor processes (default: one per CPU core).")
@redis_url_option
@click.option("--burst", is_flag=True, help="Exit once the queues are empty.")
@click.option("--name", default=None, help="Worker id (default: host-pid-random).")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@click.option("--allow-eviction", is_flag=True,
              help="Serve a Redis whose maxmemory-policy can evict flowkit's keys (warns); "
                   "same as FLOWKIT_ALLOW_EVICTION=1.")
def start(queues: tuple[str, ...], concurrency: int | None, redis_url: str | None, burst: bool,
          name: str | None, parent_pid: int | None, allow_eviction: bool) -> None:
    """Start a worker: a supervisor with N warm executor processes."""
    from flowkit.settings import get_settings
    from flowkit.workers.supervisor import WorkerConfig, WorkerSupervisor

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    supervisor = WorkerSupervisor(WorkerConfig.from_settings(
        settings, resolve_url(redis_url), list(queues) or [settings.default_queue],
        concurrency or settings.executor_count, burst=burst, parent_pid=parent_pid, name=name,
        allow_eviction=allow_eviction or settings.allow_eviction))
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    sys.exit(supervisor.run())


@worker.command("ls")
@with_client
@json_option
def ls(client: Any, as_json: bool) -> None:
    """List live workers."""
    from flowkit.store.workers import list_workers

    render.workers(list_workers(client), as_json)
