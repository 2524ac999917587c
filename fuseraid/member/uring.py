"""A thin binding of the io_uring write ring (csrc/uring.c): queue positioned writes,
harvest their completions. Synchronous and thread-agnostic; the engine's WriteRing
(engine/ring.py) drives it from trio. `available()` says whether it can be used here:
the extension is optional (built only with liburing) and io_uring may be disabled.
FUSERAID_URING_ASYNC=1 (read by csrc/uring.c when a ring opens) sets IOSQE_ASYNC on every
write: an experiment, measured as no gain (docs/PERFORMANCE.md)."""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import Any

try:
    from fuseraid.member._uring import ffi, lib
except ImportError:  # built without liburing
    ffi = lib = None


def available() -> bool:
    return lib is not None and os.environ.get("FUSERAID_URING", "1") != "0"


class Ring:
    """One io_uring with an eventfd that becomes readable when completions wait."""

    def __init__(self, entries: int = 256) -> None:
        if lib is None:
            raise OSError(errno.ENOSYS, "fuseraid was built without liburing")
        err = ffi.new("int *")
        ring = lib.fr_ring_open(entries, err)
        if ring == ffi.NULL:
            raise OSError(err[0], f"io_uring: {os.strerror(err[0])}")
        self._ring = ring
        self.entries = entries
        self.eventfd = lib.fr_ring_eventfd(ring)
        self._ops = ffi.new("fr_op[]", entries)
        self._done = ffi.new("fr_done[]", 2 * entries)

    def write(self, items: Sequence[tuple[int, int, Any, int]]) -> int:
        """Queue writes (fd, offset, cdata buffer from ffi.from_buffer, tag) without a
        syscall; returns how many were queued (fewer when the ring is full). submit()
        sends them. The caller keeps each buffer alive until its completion is reaped."""
        n = min(len(items), self.entries)
        ops = self._ops
        for i in range(n):
            fd, off, buf, tag = items[i]
            op = ops[i]
            op.fd, op.off, op.tag, op.buf, op.len = fd, off, tag, buf, len(buf)
        return int(lib.fr_ring_write(self._ring, ops, n))

    def submit(self) -> int:
        """Hand the queued writes to the kernel: one syscall for all of them."""
        return int(lib.fr_ring_submit(self._ring))

    def reap(self) -> list[tuple[int, int]]:
        """Completions waiting now, as (tag, result: bytes written or -errno)."""
        done = self._done
        n = lib.fr_ring_reap(self._ring, done, 2 * self.entries)
        return [(done[i].tag, done[i].res) for i in range(n)]

    def clear_eventfd(self) -> None:
        try:
            os.read(self.eventfd, 8)
        except BlockingIOError:
            pass

    def close(self) -> None:
        ring, self._ring = self._ring, None
        if ring is not None:
            lib.fr_ring_close(ring)


def buffer(data: Any) -> Any:
    """A cdata view of a bytes-like object for Ring.write (no copy)."""
    return ffi.from_buffer(data)
