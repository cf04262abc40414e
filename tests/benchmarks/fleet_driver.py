"""One driver process of the fleet benchmark: maps N no-op tasks when told to, checks them.

    python fleet_driver.py SYSTEM URL INDEX N RESULT_PATH     (SYSTEM: flowkit or loop)

Driver INDEX maps ``range(INDEX * N, (INDEX + 1) * N)`` so the two drivers' tasks are told
apart. The handshake with fleet.py runs over Redis lists so both drivers start together and the
server CPU window ends at the last completion, not after the result fetches:
warm up (a small map: connections, listener, workers), RPUSH ``ready``; BLPOP ``go``; submit;
wait for all; RPUSH ``done`` with the times; BLPOP ``check:INDEX``; fetch and check every result;
write {index, tasks, ok, t_submit, t_done} as JSON to RESULT_PATH; exit 0 only if all were right.
Times are ``time.time()``: every process runs on this machine, one clock.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

#: Prefix of the handshake keys (fleet.py uses the same).
KEY = "bench-fleet"
#: Seconds a driver waits for any handshake step or for its map.
TIMEOUT = 180


def mapper(system: str, url: str) -> Callable[[list[int]], Callable[[], list[Any]]]:
    """``submit(args)``: return once all are done, with a callable that fetches the results."""
    if system == "flowkit":
        import flowkit

        import bench_tasks

        def submit_flowkit(args: list[int]) -> Callable[[], list[Any]]:
            futures = bench_tasks.noop.map(args)
            if flowkit.wait(futures, timeout=TIMEOUT).not_done:
                raise TimeoutError(f"unfinished after {TIMEOUT} s")
            return lambda: [f.result(timeout=10) for f in futures]

        return submit_flowkit
    from hand_loop import LoopSystem

    loop = LoopSystem(url, {}, Path("."), redis.Redis.from_url(url))
    return lambda args: loop.run_map("noop", args, TIMEOUT)


def main(argv: list[str]) -> int:
    """Run one driver (arguments as in the module docstring)."""
    system, url, index, count, result_path = argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4]
    # redis-py's default 5 s socket timeout would cut the blocking waits for the signals.
    control = redis.Redis.from_url(url, socket_timeout=TIMEOUT + 10)
    submit = mapper(system, url)
    if submit(list(range(20)))() != list(range(20)):
        raise AssertionError("warm-up: wrong results")
    control.rpush(f"{KEY}:ready", index)
    if control.blpop([f"{KEY}:go"], timeout=TIMEOUT) is None:
        raise TimeoutError("no go signal")
    args = list(range(index * count, (index + 1) * count))
    t_submit = time.time()
    fetch = submit(args)
    t_done = time.time()
    control.rpush(f"{KEY}:done", json.dumps({"index": index, "t_submit": t_submit,
                                             "t_done": t_done}))
    if control.blpop([f"{KEY}:check:{index}"], timeout=TIMEOUT) is None:
        raise TimeoutError("no check signal")
    results = fetch()
    ok = results == args
    Path(result_path).write_text(json.dumps({"index": index, "tasks": len(results), "ok": ok,
                                             "t_submit": t_submit, "t_done": t_done}))
    if system == "flowkit":
        from flowkit.driver import reset_driver

        reset_driver()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
