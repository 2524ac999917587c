"""One member (a regular file or a block device) with synchronous positioned I/O.
The engine calls these from worker threads, one whole request per thread hop, so they
block on purpose; inside a non-blocking section (nowait.py) reads never block and
nothing else is allowed. Every failure raises MemberIOError naming the path and the
errno."""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import time
from collections.abc import Sequence

from fuseraid.errors import MemberIOError
from fuseraid.member import nowait

_BLKGETSIZE64 = 0x80081272  # _IOR(0x12, 114, size_t)
_IOV_MAX = 1024  # Linux UIO_MAXIOV: most buffers one preadv/pwritev takes


def _mk(code: int, msg: str) -> MemberIOError:
    """MemberIOError whose str() is just msg (one line) but which carries .errno."""
    err = MemberIOError(msg)
    err.errno = code
    return err


def _err(path: str, what: str, e: OSError) -> MemberIOError:
    code = e.errno if e.errno is not None else errno.EIO
    name = errno.errorcode.get(code, str(code))
    return _mk(code, f"{path}: {what}: {e.strerror or 'I/O error'} ({name})")


class Member:
    """An open member. `readonly` opens O_RDONLY. Taking the member excludes every other
    process (and every other Member in this one): flock(LOCK_EX|LOCK_NB) on files, and
    O_EXCL on block devices (which also keeps the kernel's md and mounts away)."""

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        self._fd = -1
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise _err(self.path, "cannot open member", e) from e
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not (self.is_block or stat.S_ISREG(st.st_mode)):
            raise _mk(errno.EINVAL,
                                f"{self.path}: not a regular file or block device")
        if self.is_block:
            flags |= os.O_EXCL  # exclusive open: EBUSY while anyone else holds it
        try:
            fd = os.open(self.path, flags)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise _mk(errno.EBUSY, f"{self.path}: member is busy (in use by "
                                    "another array, mount or process)") from e
            raise _err(self.path, "cannot open member", e) from e
        try:
            # flock on devices too: redundant with O_EXCL, but one rule for both kinds
            _lock(fd)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise _mk(errno.EBUSY, f"{self.path}: member is busy (locked "
                                    "by another fuseraid array)") from e
            raise _err(self.path, "cannot lock member", e) from e
        self._fd = fd
        # non-blocking reads (nowait.py): the flags this file takes, None once refused
        self._nowait: int | None = nowait.read_flags(fd)
        try:
            self.size = self._query_size()
        except MemberIOError:
            self.close()
            raise

    def _query_size(self) -> int:
        try:
            if self.is_block:
                buf = fcntl.ioctl(self._fd, _BLKGETSIZE64, b"\0" * 8)
                return struct.unpack("Q", buf)[0]
            return os.fstat(self._fd).st_size
        except OSError as e:
            raise _err(self.path, "cannot get size", e) from e

    # ---- state ---------------------------------------------------------------

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise _mk(errno.EBADF, f"{self.path}: member is closed")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        """Release the lock and the descriptor; closing twice is harmless."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError as e:
                raise _err(self.path, "close failed", e) from e

    def __enter__(self) -> Member:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Member({self.path!r}, size={getattr(self, 'size', '?')})"

    # ---- I/O -------------------------------------------------------------------

    def _check_range(self, what: str, off: int, n: int) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise _mk(errno.EINVAL, f"{self.path}: {what} of {n} bytes at "
                                f"{off} is outside the member ({self.size} bytes)")

    def pread(self, off: int, n: int) -> bytes:
        """Exactly n bytes at off; a short read inside the member is an error."""
        _no_section()
        self._check_range("read", off, n)
        try:
            first = os.pread(self.fd, n, off)  # the usual case: one syscall, no copy
        except OSError as e:
            raise _err(self.path, f"read of {n} bytes at {off} failed", e) from e
        if len(first) == n:
            return first
        buf = bytearray(n)
        buf[: len(first)] = first
        self.preadinto(memoryview(buf)[len(first) :], off + len(first))
        return bytes(buf)

    def preadinto(self, buf: bytearray | memoryview, off: int) -> None:
        """Fill the whole writable buffer from offset off."""
        mv = memoryview(buf).cast("B")
        n = len(mv)
        self._check_range("read", off, n)
        sec = nowait.current()
        if sec is not None:
            self._read_nowait(sec, [mv], off, n)
            return
        done = 0
        fd = self.fd
        while done < n:
            try:
                got = os.preadv(fd, [mv[done:]], off + done)
            except OSError as e:
                raise _err(self.path, f"read of {n} bytes at {off} failed", e) from e
            if got == 0:
                raise _mk(errno.EIO, f"{self.path}: short read: {done} of {n} "
                                    f"bytes at {off} (member shrank?)")
            done += got

    def read_now(self, off: int, n: int) -> bytearray | None:
        """n bytes at off if they are all in the page cache now, else None: never blocks
        and never raises (an error is the ordinary path's to meet and report)."""
        flags = self._nowait
        if flags is None or self._fd < 0 or off < 0 or off + n > self.size:
            return None
        try:
            return nowait.pread(self._fd, off, n, flags)
        except nowait.Unsupported:
            self._nowait = None  # this file refuses: the ordinary path from now on
            return None

    def _read_nowait(self, sec: nowait.Section, views: list[memoryview], off: int,
                     total: int) -> None:
        flags = self._nowait
        if flags is None:
            raise nowait.WouldBlock
        try:
            nowait.read(sec, self.fd, views, off, total, flags)
        except nowait.Unsupported:
            self._nowait = None
            raise

    def pwrite(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """Write all of data at off (loops on short writes)."""
        _no_section()
        mv = memoryview(data).cast("B")
        n = len(mv)
        self._check_range("write", off, n)
        done = 0
        fd = self.fd
        while done < n:
            try:
                put = os.pwrite(fd, mv[done:], off + done)
            except OSError as e:
                raise _err(self.path, f"write of {n} bytes at {off} failed", e) from e
            if put == 0:
                raise _mk(errno.EIO, f"{self.path}: short write: {done} of {n} "
                                    f"bytes at {off}")
            done += put

    def preadv(self, bufs: Sequence[bytearray | memoryview], off: int) -> None:
        """Fill several buffers from consecutive bytes starting at off, in as few
        syscalls as the kernel allows (one when it returns everything)."""
        views = [memoryview(b).cast("B") for b in bufs]
        views = [v for v in views if len(v)]
        total = sum(len(v) for v in views)
        self._check_range("read", off, total)
        sec = nowait.current()
        if sec is not None and len(views) <= _IOV_MAX:
            self._read_nowait(sec, views, off, total)
            return
        if sec is not None:
            raise nowait.WouldBlock
        pos = off
        fd = self.fd
        while views:
            try:
                got = os.preadv(fd, views[:_IOV_MAX], pos)
            except OSError as e:
                raise _err(self.path, f"read of {total} bytes at {off} failed", e) from e
            if got == 0:
                raise _mk(errno.EIO, f"{self.path}: short read: {pos - off} of "
                                    f"{total} bytes at {off}")
            pos += got
            views = _advance(views, got)

    def pwritev(self, bufs: Sequence[bytes | bytearray | memoryview], off: int) -> None:
        """Write several buffers to consecutive bytes starting at off."""
        _no_section()
        views = [memoryview(b).cast("B") for b in bufs]
        views = [v for v in views if len(v)]
        total = sum(len(v) for v in views)
        self._check_range("write", off, total)
        pos = off
        fd = self.fd
        while views:
            try:
                put = os.pwritev(fd, views[:_IOV_MAX], pos)
            except OSError as e:
                raise _err(self.path, f"write of {total} bytes at {off} failed", e) from e
            if put == 0:
                raise _mk(errno.EIO, f"{self.path}: short write: {pos - off} of "
                                    f"{total} bytes at {off}")
            pos += put
            views = _advance(views, put)

    def write_durable(self, off: int, data: bytes | bytearray | memoryview) -> None:
        """Write data at off and make it durable before returning: one pwritev with
        RWF_DSYNC (that range synced as fdatasync would; a superblock's place never
        changes, so nothing else about the file needs syncing), or pwrite + fsync where
        the kernel refuses the flag. One syscall matters: a live reshape commits per
        batch, and every syscall is a GIL hand-off with the FUSE loop."""
        _no_section()
        mv = memoryview(data).cast("B")
        self._check_range("write", off, len(mv))
        if _DSYNC:
            try:
                if os.pwritev(self.fd, [mv], off, _DSYNC) == len(mv):
                    return
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise _err(self.path, f"durable write of {len(mv)} bytes at {off} "
                                          "failed", e) from e
        self.pwrite(off, mv)  # short, or no RWF_DSYNC: the plain way
        self.fsync()

    def fsync(self) -> None:
        _no_section()
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise _err(self.path, "fsync failed", e) from e


_DSYNC = getattr(os, "RWF_DSYNC", 0)
# How long a held lock may take to go away: the lock of a daemon that was just killed
# outlives it while the kernel tears down its io_uring, whose writes in flight still
# hold the member's file (measured: milliseconds); another live array holds it for good.
_LOCK_GRACE = 2.0


def _lock(fd: int) -> None:
    """flock(LOCK_EX|LOCK_NB), retried for up to _LOCK_GRACE seconds."""
    deadline = time.monotonic() + _LOCK_GRACE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                raise
        time.sleep(0.01)


def _no_section() -> None:
    """Blocking calls are refused inside a non-blocking section (the caller retries the
    whole request in a worker thread)."""
    if nowait.current() is not None:
        raise nowait.WouldBlock


def _advance(views: list[memoryview], n: int) -> list[memoryview]:
    """Drop the first n bytes from a list of buffers."""
    while n and views:
        if n >= len(views[0]):
            n -= len(views[0])
            views = views[1:]
        else:
            views = [views[0][n:], *views[1:]]
            n = 0
    return views
