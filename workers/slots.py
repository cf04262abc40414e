"""A tiny shared-memory slot per executor: which task run it is running, since when, until when.

The executor writes it around every attempt (a few memory writes, no system call); the
supervisor reads it in its loop to enforce hard timeouts, cancel running attempts and, when an
executor dies, know which task run was running (it crashed) and which were only claimed (they
go back to the queue untouched). A sequence number makes reads consistent without locks.
"""

from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass
from pathlib import Path

#: seq (even: stable, odd: being written), started, deadline (0: none), the retry delay if a
#: hard timeout ends the attempt (negative: no retry), task run id (16 bytes).
_LAYOUT = struct.Struct("<Qddd16s")
SIZE = _LAYOUT.size


@dataclass(frozen=True)
class Running:
    """What an executor is running right now."""

    task_run_id: str
    started: float
    deadline: float  #: epoch seconds; 0.0 when the task has no timeout
    #: Seconds before the next attempt if a hard timeout ends this one; negative: none.
    timeout_retry_delay: float = -1.0


class Slot:
    """One executor's slot, backed by a small file mapped into both processes."""

    def __init__(self, path: Path, create: bool = False) -> None:
        self.path = path
        if create:
            path.write_bytes(b"\0" * SIZE)
        fd = os.open(path, os.O_RDWR)
        try:
            self._map = mmap.mmap(fd, SIZE)
        finally:
            os.close(fd)
        self._seq = _LAYOUT.unpack_from(self._map, 0)[0]

    def _write(self, started: float, deadline: float, retry_delay: float,
               task_run_id: bytes) -> None:
        self._seq += 1  # odd: a reader retries
        struct.pack_into("<Q", self._map, 0, self._seq)
        _LAYOUT.pack_into(self._map, 0, self._seq, started, deadline, retry_delay, task_run_id)
        self._seq += 1
        struct.pack_into("<Q", self._map, 0, self._seq)

    def start(self, task_run_id: str, started: float, deadline: float,
              timeout_retry_delay: float = -1.0) -> None:
        """Executor side: an attempt begins (with the retry decision for a hard timeout,
        which only the executor can make: it holds the task's retry options)."""
        self._write(started, deadline, timeout_retry_delay,
                    task_run_id.encode()[:16].ljust(16, b"\0"))

    def clear(self) -> None:
        """Executor side: the attempt ended."""
        self._write(0.0, 0.0, -1.0, b"\0" * 16)

    def read(self) -> Running | None:
        """Supervisor side: the running attempt, or None when idle."""
        for _ in range(100):
            seq, started, deadline, retry_delay, raw = _LAYOUT.unpack_from(self._map, 0)
            if seq % 2 == 0 and struct.unpack_from("<Q", self._map, 0)[0] == seq:
                task_run_id = raw.rstrip(b"\0").decode()
                return (Running(task_run_id, started, deadline, retry_delay) if task_run_id
                        else None)
        return None

    def close(self) -> None:
        self._map.close()


def slot_dir() -> Path:
    """Where slot files live: shared memory when the system has it."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(os.environ.get("TMPDIR", "/tmp"))
