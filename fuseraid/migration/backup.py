"""Backup area for in-place windows: before the new layout overwrites a window's own old
bytes, the window's content goes to a file with a checksummed header and is fsynced.
A record is trusted only when both checksums verify and it names this array, this
reshape and a window that starts (forward) or ends (backward) at the durable border."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from fuseraid.errors import FuseraidError

MAGIC = b"FRAIDBK1"
HEADER = 4096  # data follows at this offset
# magic, array uuid, reshape id, start, length, data sha256, header sha256
_FMT = struct.Struct("<8s16s32sQQ32s")


@dataclass(frozen=True)
class Record:
    start: int
    length: int
    data: bytes


class BackupFile:
    """One record slot in a file (created if absent). `reshape_id` ties records to one
    reshape (see reshape_id()); a record of another array or reshape is never used."""

    def __init__(self, path: str | os.PathLike[str], array_uuid: bytes, reshape_id: bytes) -> None:
        self.path = os.fspath(path)
        self.array_uuid = array_uuid
        self.reshape_id = reshape_id
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise FuseraidError(f"{self.path}: cannot open backup file: {e.strerror}") from e

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> BackupFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, start: int, data: bytes | bytearray | memoryview) -> None:
        """Store the window [start, start+len(data)) durably (data, header, fsync):
        one pwritev of header and data, no copy of the window."""
        data = memoryview(data).cast("B")
        head = _FMT.pack(MAGIC, self.array_uuid, self.reshape_id, start, len(data),
                         hashlib.sha256(data).digest())
        head += hashlib.sha256(head).digest()
        try:
            bufs = [memoryview(head.ljust(HEADER, b"\0")), data]
            pos = 0
            while bufs:
                put = os.pwritev(self._fd, bufs, pos)
                if put <= 0:
                    raise OSError(5, "short write")
                pos += put
                while bufs and put >= len(bufs[0]):
                    put -= len(bufs[0])
                    bufs.pop(0)
                if bufs and put:
                    bufs[0] = bufs[0][put:]
            os.fsync(self._fd)
        except OSError as e:
            raise FuseraidError(f"{self.path}: cannot write backup: {e.strerror}") from e

    def read(self) -> Record | None:
        """The stored record if it verifies and belongs to this reshape, else None."""
        try:
            head = os.pread(self._fd, HEADER, 0)
        except OSError as e:
            raise FuseraidError(f"{self.path}: cannot read backup: {e.strerror}") from e
        n = _FMT.size
        if len(head) < n + 32:
            return None
        if hashlib.sha256(head[:n]).digest() != head[n : n + 32]:
            return None
        magic, uuid, rid, start, length, digest = _FMT.unpack_from(head)
        if magic != MAGIC or uuid != self.array_uuid or rid != self.reshape_id:
            return None
        data = os.pread(self._fd, length, HEADER)
        if len(data) != length or hashlib.sha256(data).digest() != digest:
            return None
        return Record(start, length, data)

    def clear(self) -> None:
        """Invalidate the record (the reshape finished)."""
        os.pwrite(self._fd, b"\0" * HEADER, 0)
        os.ftruncate(self._fd, HEADER)
        os.fsync(self._fd)


def reshape_id(desc: str) -> bytes:
    """32 bytes naming one reshape: a hash of its old/new geometry and offsets."""
    return hashlib.sha256(desc.encode()).digest()
