"""Cost of log capture: one task printing N lines with ``log_prints=True``, through a real worker.

Starts its own server (flowkit's embedded launcher, loopback, a temporary FLOWKIT_HOME) and one
``flowkit worker start -c 1``, warms it up with a one-line task, then times submit to result of
a task printing N lines, and reports the time per line and the lines the run's stream kept
(at most LOGS_MAXLEN). ``--echo`` lets the driver echo lines to stderr (rate-limited).

    .venv/bin/python tests/benchmarks/bench_logs.py 1000000 --echo
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench_logs")
    parser.add_argument("lines", type=int, nargs="?", default=100_000)
    parser.add_argument("--echo", action="store_true", help="the driver echoes log lines")
    ns = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="flowkit-bench-logs-",
                                     ignore_cleanup_errors=True) as home:
        from flowkit.embedded import _started, free_port, start_server

        url = start_server(Path(home), port=free_port(), detach=False, record=False).url()
        os.environ.update(FLOWKIT_REDIS_URL=url, FLOWKIT_HOME=home, FLOWKIT_SECRET_KEY="b" * 32,
                          FLOWKIT_ECHO_LOGS="1" if ns.echo else "0")
        sys.path.insert(0, str(TESTS_DIR))
        import redis

        from flowkit.store import keys

        from tasks_for_tests import print_lines

        worker = subprocess.Popen(
            [sys.executable, "-m", "flowkit", "worker", "start", "-c", "1", "--redis-url", url],
            env={**os.environ, "PYTHONPATH": str(TESTS_DIR)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            print_lines.submit(1).result(timeout=60)
            started = time.perf_counter()
            future = print_lines.submit(ns.lines)
            assert future.result(timeout=3600) == ns.lines
            elapsed = time.perf_counter() - started
            client = redis.Redis.from_url(url)
            flow_run_id = client.hget(keys.task_run(future.task_run_id), "flow_run_id")
            kept = client.xlen(keys.logs(flow_run_id.decode()))  # type: ignore[union-attr]
        finally:
            from flowkit.driver import reset_driver

            reset_driver()
            worker.terminate()
            worker.wait(timeout=15)
            for proc in _started:
                proc.terminate()
                proc.wait(timeout=15)
        print(f"{ns.lines} lines, echo {'on' if ns.echo else 'off'}: {elapsed:.2f} s, "
              f"{elapsed / ns.lines * 1e6:.1f} us per line; the stream keeps {kept}",
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
