"""Raising an exception in another thread: how a flow running elsewhere is interrupted."""

from __future__ import annotations

import ctypes


def raise_in_thread(thread_id: int, exc_type: type[BaseException] | None) -> None:
    """Raise ``exc_type`` in thread ``thread_id`` at its next bytecode (None: take back an
    exception set but not yet delivered)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc_type) if exc_type else None)
