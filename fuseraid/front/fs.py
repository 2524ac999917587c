"""The FUSE filesystem: a root directory holding one regular file, `image`, whose bytes
are the array's bytes. Thin on purpose: every call turns into one Array call."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Any, Protocol

import pyfuse3

from fuseraid.errors import FuseraidError

log = logging.getLogger("fuseraid.front")

IMAGE_NAME = b"image"
IMAGE_INODE = pyfuse3.ROOT_INODE + 1
# xattr on the mount root naming the control socket, so clients can find it.
CONTROL_XATTR = b"user.fuseraid.control"
BLOCK = 4096


class ArrayLike(Protocol):
    """What the front needs from the engine's Array."""

    size: int

    async def read(self, off: int, n: int) -> bytes: ...

    async def write(self, off: int, data: bytes) -> Any: ...

    async def flush(self) -> None: ...


class ImageFS(pyfuse3.Operations):
    """pyfuse3 operations over one Array.

    direct_io: open the image with FOPEN_DIRECT_IO (no page cache in the FUSE layer;
    see docs/fuse-front.md for the measurement behind the default).
    """

    supports_dot_lookup = False
    enable_writeback_cache = False

    def __init__(
        self,
        array: ArrayLike,
        *,
        readonly: bool = False,
        allow_other: bool = False,
        direct_io: bool = True,
        control_path: str = "",
    ) -> None:
        super().__init__()
        self.array = array
        self.readonly = readonly
        self.direct_io = direct_io
        self.control_path = control_path
        self.uid = os.getuid()
        self.gid = os.getgid()
        # Only the owner may open the image unless allow_other; the kernel enforces the
        # mode because we always mount with default_permissions.
        self.mode = 0o666 if allow_other else 0o600
        if readonly:
            self.mode &= 0o444
        now = time.time_ns()
        self.atime_ns = self.mtime_ns = self.ctime_ns = now
        self.root_mtime_ns = now

    # ---- attributes -------------------------------------------------------------

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        a.st_uid = self.uid
        a.st_gid = self.gid
        a.st_blksize = BLOCK
        # The size may change under a live reshape: never let the kernel cache it long.
        a.attr_timeout = 1.0
        a.entry_timeout = 1.0
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
            a.st_size = 0
            a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.root_mtime_ns
        elif inode == IMAGE_INODE:
            size = self.array.size
            a.st_mode = stat.S_IFREG | self.mode
            a.st_nlink = 1
            a.st_size = size
            a.st_blocks = (size + 511) // 512
            a.st_atime_ns = self.atime_ns
            a.st_mtime_ns = self.mtime_ns
            a.st_ctime_ns = self.ctime_ns
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return a

    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        if parent_inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if name == IMAGE_NAME:
            return self._attr(IMAGE_INODE)
        if name in (b".", b".."):
            return self._attr(pyfuse3.ROOT_INODE)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        if inode != IMAGE_INODE:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_size and attr.st_size != self.array.size:
            # The image is the array: its size changes only by reshape, never truncate.
            # Truncating to the current size (e.g. O_TRUNC of an empty array) is a no-op.
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_mode:
            self.mode = stat.S_IMODE(attr.st_mode)
        if fields.update_atime:
            self.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            self.mtime_ns = attr.st_mtime_ns
        self.ctime_ns = time.time_ns()
        return self._attr(inode)

    async def access(self, inode: int, mode: int, ctx: pyfuse3.RequestContext) -> bool:
        # Only reached without default_permissions; mirror the kernel's mode check.
        if ctx.uid == 0:
            return True
        st = self._attr(inode)
        perm = stat.S_IMODE(st.st_mode)
        bits = (perm >> 6) if ctx.uid == self.uid else perm
        if self.readonly and mode & os.W_OK:
            return False
        return (bits & mode & 0o7) == (mode & 0o7)

    # ---- the image ----------------------------------------------------------------

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if inode != IMAGE_INODE:
            raise pyfuse3.FUSEError(errno.EISDIR if inode == pyfuse3.ROOT_INODE else errno.ENOENT)
        if self.readonly and (flags & os.O_ACCMODE) != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        return pyfuse3.FileInfo(fh=IMAGE_INODE, direct_io=self.direct_io, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        # the array answers past its end with b"" (size is unsigned here): no check
        try:
            return await self.array.read(off, size)
        except (FuseraidError, OSError) as e:
            raise _fuse_error(e, "read", off, size) from None

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        if self.readonly:
            raise pyfuse3.FUSEError(errno.EROFS)
        size = self.array.size
        if off >= size:
            raise pyfuse3.FUSEError(errno.ENOSPC)
        if off + len(buf) > size:
            buf = buf[: size - off]  # short write up to the end, like a block device
        try:
            await self.array.write(off, buf)
        except (FuseraidError, OSError) as e:
            raise _fuse_error(e, "write", off, len(buf)) from None
        self.mtime_ns = self.ctime_ns = time.time_ns()
        return len(buf)

    async def fsync(self, fh: int, datasync: bool) -> None:
        try:
            await self.array.flush()
        except (FuseraidError, OSError) as e:
            raise _fuse_error(e, "fsync", 0, 0) from None

    async def flush(self, fh: int) -> None:
        # close(2): nothing is buffered here (fsync is what makes data durable).
        return None

    async def release(self, fh: int) -> None:
        return None

    # ---- the root directory -------------------------------------------------------

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        if start_id == 0:
            pyfuse3.readdir_reply(token, IMAGE_NAME, self._attr(IMAGE_INODE), 1)

    async def releasedir(self, fh: int) -> None:
        return None

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = BLOCK
        s.f_blocks = (self.array.size + BLOCK - 1) // BLOCK
        s.f_bfree = s.f_bavail = 0
        s.f_files = 2
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 255
        return s

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if inode == pyfuse3.ROOT_INODE and name == CONTROL_XATTR and self.control_path:
            return self.control_path.encode()
        raise pyfuse3.FUSEError(pyfuse3.ENOATTR)

    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if inode == pyfuse3.ROOT_INODE and self.control_path:
            return [CONTROL_XATTR]
        return []


def _fuse_error(e: Exception, op: str, off: int, n: int) -> pyfuse3.FUSEError:
    """Map an engine error to an errno, logging it: the kernel only sees the number."""
    code = e.errno if isinstance(e, OSError) and e.errno else errno.EIO
    if code == errno.ENOSPC:
        return pyfuse3.FUSEError(code)
    log.error("%s at %d+%d failed: %s", op, off, n, e)
    return pyfuse3.FUSEError(code)
