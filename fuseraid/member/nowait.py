"""Non-blocking sections: member I/O that a thread may do where it must never block.

The trio thread serves small requests itself when it can do so without blocking (a
thread hop costs far more than a 4 KiB request; see docs/engine.md "Small requests on
the trio thread"). Inside `section()`, on the calling thread only:

- member reads use preadv2(RWF_NOWAIT): data in the page cache is copied at once; any
  read that would wait for a device (or fails, or returns short) raises WouldBlock, and
  the caller runs the whole request again in a worker thread, where errors meet the
  failure policy. Reads change nothing, so abandoning them is always safe.
- member writes are not issued: the level driver hands them to `defer()` and the caller
  issues them from a worker thread after the section (Linux has no non-blocking buffered
  write for most filesystems; ext4 answers RWF_NOWAIT writes with EOPNOTSUPP). A read of
  bytes that a deferred write of the same section will overwrite raises WouldBlock, so a
  section never sees stale bytes of its own request.

Other threads are unaffected: the section lives in a thread-local.

`pread()` is the same non-blocking read without a section, for the levels' fast path
(Driver.read_now): one member run that owns no deferred writes, None instead of
WouldBlock.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_local = threading.local()
# RWF_NOWAIT needs Linux 4.14 and preadv2; without it every section falls back at once.
_supported = hasattr(os, "RWF_NOWAIT") and hasattr(os, "preadv")
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


class WouldBlock(Exception):
    """The request cannot finish without blocking: redo it in a worker thread."""


class Section:
    """One request's non-blocking attempt: the writes it deferred, in order."""

    __slots__ = ("deferred", "_written")

    def __init__(self) -> None:
        self.deferred: list[tuple[Any, list[tuple[int, int, Any]]]] = []
        self._written: dict[int, list[tuple[int, int]]] = {}

    def defer(self, owner: Any, writes: list[tuple[int, int, Any]]) -> None:
        """Writes (role, offset in the data area, bytes) of a level driver (`owner`),
        to be issued after the section, in order."""
        self.deferred.append((owner, writes))

    def will_write(self, fd: int, off: int, n: int) -> None:
        """Record member bytes [off, off+n) of fd that a deferred call will write."""
        self._written.setdefault(fd, []).append((off, off + n))

    def check_read(self, fd: int, off: int, n: int) -> None:
        for a, b in self._written.get(fd, ()):
            if a < off + n and off < b:
                raise WouldBlock


def current() -> Section | None:
    """The calling thread's open section, if any."""
    return getattr(_local, "section", None)


@contextmanager
def section() -> Iterator[Section]:
    """Open a non-blocking section on this thread (not nestable)."""
    if not _supported:
        raise WouldBlock
    sec = Section()
    _local.section = sec
    try:
        yield sec
    finally:
        _local.section = None


def pread(fd: int, off: int, n: int) -> bytearray | None:
    """n bytes at off of fd if the page cache holds them all, else None (the caller
    takes its ordinary path). No section: for a read that owns no deferred writes."""
    global _supported
    if not _supported:
        return None
    buf = bytearray(n)
    try:
        got = os.preadv(fd, (buf,), off, _NOWAIT)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # this kernel or file cannot
            _supported = False
        return None
    return buf if got == n else None


def read(sec: Section, fd: int, views: list[memoryview], off: int, total: int) -> None:
    """Fill views from off without blocking, entirely or not at all (WouldBlock)."""
    global _supported
    sec.check_read(fd, off, total)
    try:
        got = os.preadv(fd, views, off, os.RWF_NOWAIT)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # this kernel or file cannot
            _supported = False
        raise WouldBlock from e
    if got != total:
        raise WouldBlock
