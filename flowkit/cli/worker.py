"""``flowkit worker start``, ``flowkit worker stop`` and ``flowkit worker ls``."""

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
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="On SIGTERM or `flowkit worker stop`, let running tasks finish for this "
                   "long, then hand them back to the front of their queues and exit 0 "
                   "(default: FLOWKIT_STOP_GRACE_SECONDS, 30). A second signal hands back "
                   "at once.")
@click.option("--parent-pid", type=int, default=None, hidden=True)
@click.option("--allow-eviction", is_flag=True,
              help="Serve a Redis whose maxmemory-policy can evict flowkit's keys (warns); "
                   "same as FLOWKIT_ALLOW_EVICTION=1.")
def start(queues: tuple[str, ...], concurrency: int | None, redis_url: str | None, burst: bool,
          name: str | None, grace: float | None, parent_pid: int | None,
          allow_eviction: bool) -> None:
    """Start a worker: a supervisor with N warm executor processes."""
    from flowkit.settings import get_settings
    from flowkit.workers.supervisor import WorkerConfig, WorkerSupervisor

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    settings = get_settings()
    supervisor = WorkerSupervisor(WorkerConfig.from_settings(
        settings, resolve_url(redis_url), list(queues) or [settings.default_queue],
        concurrency or settings.executor_count, burst=burst, parent_pid=parent_pid, name=name,
        grace_seconds=grace,
        allow_eviction=allow_eviction or settings.allow_eviction))
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    sys.exit(supervisor.run())


@worker.command("stop")
@click.argument("worker_id")
@click.option("--grace", type=click.FloatRange(min=0), default=None, metavar="SECONDS",
              help="Seconds running tasks may still take before they are handed back "
                   "(default: the worker's own --grace).")
@with_client
def stop(client: Any, worker_id: str, grace: float | None) -> None:
    """Drain and stop a live worker, on any host (it acts within a second)."""
    from flowkit.store.workers import request_stop

    if not request_stop(client, worker_id, grace):
        click.echo(f"Error: no live worker {worker_id!r}; `flowkit worker ls` lists their ids",
                   err=True)
        sys.exit(2)
    click.echo(f"stop requested for worker {worker_id}")


@worker.command("ls")
@with_client
@json_option
def ls(client: Any, as_json: bool) -> None:
    """List live workers."""
    from flowkit.store.workers import list_workers

    render.workers(list_workers(client), as_json)
