"""The ceiling for a Python FUSE image: the barest pyfuse3 filesystem with one in-memory
file, `image`, opened with direct_io. No array, no locks, no threads: what pyfuse3 and
the kernel cost per request.

    python benchmarks/bare_pyfuse3.py MOUNTPOINT SIZE_MIB [page_cache]

Runs in the foreground until unmounted or SIGTERM."""

from __future__ import annotations

import errno
import signal
import stat
import sys

import pyfuse3
import trio

IMAGE = pyfuse3.ROOT_INODE + 1


class BareImage(pyfuse3.Operations):
    def __init__(self, size: int, direct_io: bool) -> None:
        super().__init__()
        self.buf = bytearray(size)
        self.direct_io = direct_io

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = inode
        if inode == pyfuse3.ROOT_INODE:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
        elif inode == IMAGE:
            a.st_mode, a.st_nlink, a.st_size = stat.S_IFREG | 0o600, 1, len(self.buf)
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return a

    async def lookup(self, parent, name, ctx):
        if name != b"image":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(IMAGE)

    async def getattr(self, inode, ctx):
        return self._attr(inode)

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        if start_id == 0:
            pyfuse3.readdir_reply(token, b"image", self._attr(IMAGE), 1)

    async def open(self, inode, flags, ctx):
        return pyfuse3.FileInfo(fh=inode, direct_io=self.direct_io)

    async def read(self, fh, off, size):
        return bytes(self.buf[off : off + size])

    async def write(self, fh, off, buf):
        self.buf[off : off + len(buf)] = buf
        return len(buf)

    async def fsync(self, fh, datasync):
        return None

    async def flush(self, fh):
        return None

    async def release(self, fh):
        return None


async def _main() -> None:
    async with trio.open_nursery() as n:

        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
                async for _ in sigs:
                    pyfuse3.terminate()
                    return

        n.start_soon(on_signal)
        await pyfuse3.main()
        n.cancel_scope.cancel()


def main() -> None:
    mountpoint, size_mib = sys.argv[1], int(sys.argv[2])
    direct_io = "page_cache" not in sys.argv[3:]
    fs = BareImage(size_mib << 20, direct_io)
    pyfuse3.init(fs, mountpoint, {"fsname=bare", "subtype=bare", "default_permissions"})
    try:
        print("READY", flush=True)
        trio.run(_main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
