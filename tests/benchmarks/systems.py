"""The systems the benchmark compares: flowkit and plain RQ (the loop lives in hand_loop.py).

Each system starts its own workers against a given URL (the server, or the latency proxy in
front of it), submits maps and single calls the way its users would, and stops its workers.
flowkit: one ``flowkit worker start -c 2`` (2 executor processes), driven by ``Task.map``/
``submit`` and ``flowkit.wait``. RQ: two ``rq worker -w rq.worker.SimpleWorker --quiet`` (no
fork and no log line per job), driven by ``Queue.enqueue_many`` plus polling of the finished/
failed registries every 10 ms (RQ has no batch wait), and ``Job.latest_result(timeout)``
(blocking XREAD).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import redis
from procs import spawn, stop_procs, wait_until

import bench_tasks

SECRET = "flowkit-bench-secret-0123456789ab"  # 32 characters
QUEUE = "bench"
#: RQ's own queue: flowkit's queues are RQ queues too, and every system's workers run at once.
RQ_QUEUE = "bench-rq"


class System(Protocol):
    name: str
    module: str
    client: redis.Redis
    polls: int  # completion polls the benchmark itself sent (1 read, 2 commands each)

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        """Submit one task per arg, return once all are done; the callable fetches results."""
        ...
    def round_trip(self, x: int) -> Any: ...


class _Base:
    def __init__(self, url: str, env: dict[str, str], home: Path, client: redis.Redis) -> None:
        self.url, self.env, self.home, self.client, self.polls = url, env, home, client, 0
        self.procs: list[subprocess.Popen[bytes]] = []

    def stop(self) -> None:
        stop_procs(self.procs)


class FlowkitSystem(_Base):
    name, module = "flowkit", "flowkit"
    tasks: dict[str, Any] = {"noop": bench_tasks.noop, "sleep10ms": bench_tasks.sleep10ms,
                            "take_bytes": bench_tasks.take_bytes}

    def start(self) -> None:
        from flowkit.driver import reset_driver
        from flowkit.store.workers import live_workers_for

        os.environ["FLOWKIT_REDIS_URL"] = self.url  # this process's driver talks to self.url
        reset_driver()
        cmd = [sys.executable, "-m", "flowkit", "worker", "start", "-c", "2", "-q", QUEUE,
               "--redis-url", self.url]
        self.procs.append(spawn(cmd, self.env, self.home / "flowkit-worker.log"))
        wait_until(lambda: live_workers_for(self.client, QUEUE) >= 1, 20, "the flowkit worker")
        self.run_map("noop", list(range(50)), 30)()  # warm-up: runtime, listener, workers

    def stop(self) -> None:
        from flowkit.driver import reset_driver

        reset_driver()
        super().stop()

    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        import flowkit

        futures = self.tasks[kind].map(args)
        if flowkit.wait(futures, timeout=timeout).not_done:
            raise TimeoutError(f"flowkit {kind}: unfinished after {timeout} s")
        return lambda: [f.result(timeout=5) for f in futures]

    def round_trip(self, x: int) -> Any:
        return self.tasks["noop"].submit(x).result(timeout=10)


class RqSystem(_Base):
    name, module = "RQ", "rq"

    def start(self) -> None:
        from rq import Queue, Worker

        self.queue = Queue(RQ_QUEUE, connection=self.client)

        cmd = [sys.executable, "-m", "rq.cli", "worker", "--worker-class",
               "rq.worker.SimpleWorker", "--url", self.url, "--quiet", RQ_QUEUE]
        self.procs = [spawn(cmd, self.env, self.home / f"rq-worker-{i}.log") for i in range(2)]
        wait_until(lambda: Worker.count(queue=self.queue) >= 2, 20, "2 RQ workers")
        self.run_map("noop", list(range(50)), 30)()

    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        from rq import Queue

        fn = getattr(bench_tasks, "rq_" + kind)
        finished = self.queue.finished_job_registry.key
        failed = self.queue.failed_job_registry.key
        done0, failed0 = self.client.zcard(finished), self.client.zcard(failed)
        jobs = self.queue.enqueue_many([Queue.prepare_data(fn, (a,)) for a in args])
        deadline = time.monotonic() + timeout
        while True:
            self.polls += 1
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(finished)
            pipe.zcard(failed)
            done, bad = pipe.execute()
            if bad > failed0:
                raise RuntimeError(f"RQ {kind}: {bad - failed0} job(s) failed")
            if done - done0 >= len(jobs):
                return lambda: [job.return_value() for job in jobs]
            if time.monotonic() > deadline:
                raise TimeoutError(f"RQ {kind}: unfinished after {timeout} s")
            time.sleep(0.01)

    def round_trip(self, x: int) -> Any:
        result = self.queue.enqueue(bench_tasks.rq_noop, x).latest_result(timeout=10)
        if result is None or result.type != result.Type.SUCCESSFUL:
            raise RuntimeError(f"RQ round trip {x}: no successful result within 10 s")
        return result.return_value
