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

Both take the member's read flags (`read_flags()`): RWF_NOWAIT for a file or device,
none for a memory filesystem (tmpfs, ramfs: their pages are memory, a read never waits
for a device, and tmpfs refuses RWF_NOWAIT). A file that refuses the flag raises
Unsupported, so its Member stops trying (the ordinary path serves it from then on).
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


class Unsupported(WouldBlock):
    """This file refuses non-blocking reads (EOPNOTSUPP/EINVAL): do not try again."""


# statfs f_type of filesystems whose pages are memory (linux/magic.h)
_MEMORY_FS = {0x01021994, 0x858458F6}  # TMPFS_MAGIC, RAMFS_MAGIC


def read_flags(fd: int) -> int | None:
    """preadv2 flags for non-blocking reads of fd: RWF_NOWAIT, 0 on a memory filesystem,
    or None when this kernel cannot (every attempt then falls back at once)."""
    if not _supported:
        return None
    return 0 if _fs_type(fd) in _MEMORY_FS else _NOWAIT


def _fs_type(fd: int) -> int | None:
    """fstatfs(fd).f_type (the first field of struct statfs on Linux), or None."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # larger than any struct statfs
        if libc.fstatfs(fd, buf) != 0:
            return None
        return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little")
    except (OSError, AttributeError):
        return None


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


def pread(fd: int, off: int, n: int, flags: int) -> bytearray | None:
    """n bytes at off of fd if the page cache holds them all, else None (the caller
    takes its ordinary path). No section: for a read that owns no deferred writes.
    Raises Unsupported when fd refuses the flags."""
    buf = bytearray(n)
    try:
        got = os.preadv(fd, (buf,), off, flags)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # this kernel or file cannot
            raise Unsupported from e
        return None
    return buf if got == n else None


def read(sec: Section, fd: int, views: list[memoryview], off: int, total: int,
         flags: int) -> None:
    """Fill views from off without blocking, entirely or not at all (WouldBlock;
    Unsupported when fd refuses the flags)."""
    sec.check_read(fd, off, total)
    try:
        got = os.preadv(fd, views, off, flags)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # this kernel or file cannot
            raise Unsupported from e
        raise WouldBlock from e
    if got != total:
        raise WouldBlock
