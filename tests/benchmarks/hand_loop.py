"""The yardstick: a hand-rolled BRPOP/LPUSH task loop that records nothing.

Workers pop a pickled call from one list and push the result onto the caller's reply list;
no state, history, counters, events, leases, retries or results kept. It bounds what any
Redis-queue design can do on this machine: flowkit records everything and should still beat
it per task by batching (issue 9). Run as ``python hand_loop.py URL QUEUE`` (a worker), or
driven through LoopSystem by run_bench.py.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from procs import spawn, stop_procs, wait_until

import bench_tasks

BODIES: dict[str, Callable[[Any], Any]] = {"noop": bench_tasks.rq_noop,
                                           "sleep10ms": bench_tasks.rq_sleep10ms,
                                           "take_bytes": bench_tasks.rq_take_bytes}
#: Calls pushed per round trip when a map is sent, and results taken per pop.
PUSH_CHUNK, POP_COUNT = 1000, 1000


def serve(url: str, queue: str) -> None:
    """One worker: pop, run, push the result; forever (the benchmark kills it)."""
    # No socket timeout: BRPOP blocks until work comes (redis-py's default 5 s would kill an
    # idle worker).
    client = redis.Redis.from_url(url, socket_timeout=None)
    client.sadd(f"{queue}:loop-workers", os.getpid())
    while True:
        _, raw = client.brpop([queue])
        reply_to, index, kind, arg = pickle.loads(raw)
        client.lpush(reply_to, pickle.dumps((index, BODIES[kind](arg))))


class LoopSystem:
    """The loop as a benchmark system (same workloads as flowkit and RQ where it can)."""

    name, module = "loop", "redis"

    def __init__(self, url: str, env: dict[str, str], home: Path, client: redis.Redis) -> None:
        self.url, self.env, self.home, self.client, self.polls = url, env, home, client, 0
        self.queue = "bench-loop"
        self.procs: list[Any] = []

    def start(self) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), self.url, self.queue]
        self.procs = [spawn(cmd, self.env, self.home / f"loop-worker-{i}.log") for i in range(2)]
        wait_until(lambda: self.client.scard(f"{self.queue}:loop-workers") >= 2, 20,
                   "2 loop workers")
        self.run_map("noop", list(range(50)), 30)()

    def stop(self) -> None:
        stop_procs(self.procs)

    def run_map(self, kind: str, args: list[Any], timeout: float) -> Callable[[], list[Any]]:
        reply_to = f"{self.queue}:reply:{uuid.uuid4().hex}"
        for start in range(0, len(args), PUSH_CHUNK):
            pipe = self.client.pipeline(transaction=False)
            for i in range(start, min(start + PUSH_CHUNK, len(args))):
                pipe.lpush(self.queue, pickle.dumps((reply_to, i, kind, args[i])))
            pipe.execute()
        results: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        while len(results) < len(args):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"loop {kind}: unfinished after {timeout} s")
            popped = self.client.blmpop(min(left, 1.0), 1, reply_to, direction="RIGHT",
                                        count=POP_COUNT)
            if popped:
                for raw in popped[1]:
                    index, value = pickle.loads(raw)
                    results[index] = value
        return lambda: [results[i] for i in range(len(args))]

    def round_trip(self, x: int) -> Any:
        reply_to = f"{self.queue}:reply:{uuid.uuid4().hex}"
        self.client.lpush(self.queue, pickle.dumps((reply_to, 0, "noop", x)))
        popped = self.client.brpop([reply_to], timeout=4)  # under the 5 s socket timeout
        if popped is None:
            raise TimeoutError(f"loop round trip {x}: no result within 4 s")
        return pickle.loads(popped[1])[1]


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2])
