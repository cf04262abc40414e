"""Real driver processes for lifecycle tests: a script run with ``python``, its output read
line by line with a bound on every wait."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

#: The head of the lifecycle tests' driver scripts: a task that sleeps a minute (it is still
#: queued or running when the test interrupts or kills its driver).
SLOW_TASK_SCRIPT = '''
import time
from flowkit import flow, task
from flowkit.context import flow_run_ctx

@task
def slow(i: int) -> int:
    time.sleep(60)
    return i
'''


def _hear_ctrl_c() -> None:
    """In the child, before exec: SIGINT back to its default. A suite started in the
    background by a non-interactive shell ignores SIGINT (POSIX), every child inherits that,
    and Python then never turns Ctrl-C into KeyboardInterrupt: the tests of Ctrl-C would
    test nothing. (``restore_signals`` covers SIGPIPE and SIGXFSZ only.)"""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DriverProcess:
    """A driver script in its own process; stdout read as lines, stderr kept in a file."""

    def __init__(self, tmp_path: Path, source: str, env: dict[str, str] | None = None) -> None:
        script = tmp_path / "driver_script.py"
        script.write_text(textwrap.dedent(source))
        self.stderr_path = tmp_path / "driver_stderr.txt"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-u", str(script)], stdout=subprocess.PIPE, stderr=err,
                env={**os.environ, **(env or {})}, cwd=tmp_path, preexec_fn=_hear_ctrl_c)
        self._buffer = b""

    def read_line(self, timeout: float = 30.0) -> str:
        """The next line the script printed; fails after ``timeout`` seconds."""
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not selector.select(remaining):
                    raise AssertionError(f"no line from the driver in {timeout} s; stderr: "
                                         f"{self.stderr()}")
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise AssertionError(f"the driver exited ({self.proc.wait(5)}); stderr: "
                                         f"{self.stderr()}")
                self._buffer += chunk
        finally:
            selector.close()
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """Kill it if it still runs, and close its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
