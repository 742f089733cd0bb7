"""Giving freed memory back to the operating system, for long-running processes.

glibc keeps freed heap pages (per arena) for reuse instead of returning them, so a process that
reads and encodes scans of varying size (a cohort run, the app, the MCP server) grows in resident
memory without using more. :func:`release_memory` collects reference cycles and asks glibc to
return what it can (``malloc_trim``); elsewhere it only collects. Callers run it after a case is
dropped (a cohort case done, a session evicted, an MCP case replaced) and when idle.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

_LIBC = ctypes.CDLL(ctypes.util.find_library("c")) if sys.platform.startswith("linux") else None


def release_memory() -> None:
    """Collect cycles and return freed heap pages to the OS (glibc's ``malloc_trim``)."""
    gc.collect()
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


__all__ = ["release_memory"]
