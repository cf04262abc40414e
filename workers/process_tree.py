"""Executors and everything their tasks start live and die as one process group.

Each executor runs in its own session (``start_new_session=True``), so the task's children
(``subprocess.Popen`` in user code, shells, their grandchildren) share the executor's process
group: killing the group on a hard timeout, a cancel, a lost lease or any executor exit leaves
no orphan behind. The executor also asks the kernel to SIGKILL it when its supervisor dies
(``PR_SET_PDEATHSIG``): a supervisor killed with ``kill -9`` cannot leave executors that keep
claiming work with nobody renewing their leases.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import sys

logger = logging.getLogger(__name__)

#: prctl option: the signal the kernel sends this process when its parent thread exits.
_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux only).

    Returns False where the kernel has no such request; callers then rely on checking
    ``os.getppid()`` before they claim work.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: %s",
                           os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:  # no libc to load (static or exotic builds)
        logger.warning("cannot ask to die with the supervisor: %s", exc)
        return False
    return True


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Send ``sig`` to every process of group ``pgid``; False when the group is already gone."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:  # the id now names somebody else's group: not ours to kill
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of group ``pgid``, read from /proc (Linux; [] elsewhere)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may contain spaces): state ppid pgrp ...
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry))
    return members
