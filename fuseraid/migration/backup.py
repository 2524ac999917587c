"""Backup area for in-place windows: before the new layout overwrites a window's own old
bytes, the window's content goes to the backup area with a checksummed header and is
fsynced. The area is a file (`--backup-file`) or a stretch of an added member's free
tail; the record code is the same for both (`BackupArea` over a store that can pread,
pwritev and fsync). A record is trusted only when both checksums verify and it names
this array, this reshape and a window that starts (forward) or ends (backward) at the
durable border."""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from typing import Any, Protocol

from fuseraid.errors import FuseraidError

MAGIC = b"FRAIDBK1"
HEADER = 4096  # data follows at this offset from the area's base
# magic, array uuid, reshape id, start, length, data sha256, header sha256
_FMT = struct.Struct("<8s16s32sQQ32s")


@dataclass(frozen=True)
class Record:
    start: int
    length: int
    data: bytes


class Store(Protocol):
    """Where an area lives: a Member, or an open backup file (_FileStore)."""

    def pread(self, off: int, n: int) -> bytes: ...

    def pwritev(self, bufs: list[Any], off: int) -> None: ...

    def fsync(self) -> None: ...


class BackupArea:
    """One record slot: a HEADER-byte header at `base`, the window's data after it, all
    within `capacity` bytes (None: no limit, a file). `reshape_id` ties records to one
    reshape (see reshape_id()); a record of another array or reshape is never used.
    `where` describes the place for status output and messages."""

    def __init__(self, store: Store, base: int, capacity: int | None, name: str,
                 array_uuid: bytes, reshape_id: bytes, where: dict[str, Any]) -> None:
        self.store = store
        self.base = base
        self.capacity = capacity
        self.name = name
        self.array_uuid = array_uuid
        self.reshape_id = reshape_id
        self.where = where

    @classmethod
    def on_member(cls, member: Any, base: int, capacity: int, array_uuid: bytes,
                  reshape_id: bytes) -> BackupArea:
        """The area [base, base+capacity) of an open Member (its free tail)."""
        where = {"kind": "member", "path": member.path, "offset": base, "length": capacity}
        return cls(member, base, capacity, f"{member.path} (backup area at {base})",
                   array_uuid, reshape_id, where)

    def close(self) -> None:
        """Nothing to release: the member belongs to the array (BackupFile closes its fd)."""

    def __enter__(self) -> BackupArea:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, start: int, data: bytes | bytearray | memoryview) -> None:
        """Store the window [start, start+len(data)) durably (data, header, fsync):
        one pwritev of header and data, no copy of the window."""
        data = memoryview(data).cast("B")
        if self.capacity is not None and HEADER + len(data) > self.capacity:
            raise FuseraidError(f"{self.name}: a window of {len(data)} bytes does not fit "
                                f"the backup area ({self.capacity} bytes)")
        head = _FMT.pack(MAGIC, self.array_uuid, self.reshape_id, start, len(data),
                         hashlib.sha256(data).digest())
        head += hashlib.sha256(head).digest()
        try:
            self.store.pwritev([head.ljust(HEADER, b"\0"), data], self.base)
            self.store.fsync()
        except (OSError, FuseraidError) as e:
            raise FuseraidError(f"{self.name}: cannot write backup: {_why(e)}") from e

    def _header(self) -> tuple[bytes, bytes, bytes, int, int, bytes] | None:
        """The header's fields if its checksum verifies, else None."""
        try:
            head = self.store.pread(self.base, HEADER)
        except (OSError, FuseraidError) as e:
            raise FuseraidError(f"{self.name}: cannot read backup: {_why(e)}") from e
        n = _FMT.size
        if len(head) < n + 32 or hashlib.sha256(head[:n]).digest() != head[n : n + 32]:
            return None
        fields = _FMT.unpack_from(head)
        return fields if fields[0] == MAGIC else None

    def read(self) -> Record | None:
        """The stored record if it verifies and belongs to this reshape, else None."""
        h = self._header()
        if h is None:
            return None
        _, uuid, rid, start, length, digest = h
        if uuid != self.array_uuid or rid != self.reshape_id:
            return None
        if self.capacity is not None and HEADER + length > self.capacity:
            return None
        try:
            data = self.store.pread(self.base + HEADER, length)
        except (OSError, FuseraidError) as e:
            raise FuseraidError(f"{self.name}: cannot read backup: {_why(e)}") from e
        if len(data) != length or hashlib.sha256(data).digest() != digest:
            return None
        return Record(start, length, data)

    def foreign(self) -> bool:
        """Whether the area holds a valid header of another array or reshape."""
        h = self._header()
        return h is not None and (h[1], h[2]) != (self.array_uuid, self.reshape_id)

    def clear(self) -> None:
        """Invalidate the record (the reshape finished)."""
        self.store.pwritev([bytes(HEADER)], self.base)
        self.store.fsync()


class _FileStore:
    """An open backup file: reads may be short (the file grows with its first record)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def pread(self, off: int, n: int) -> bytes:
        return os.pread(self.fd, n, off)

    def pwritev(self, bufs: list[Any], off: int) -> None:
        views = [memoryview(b).cast("B") for b in bufs]
        while views:
            put = os.pwritev(self.fd, views, off)
            if put <= 0:
                raise OSError(5, "short write")
            off += put
            while views and put >= len(views[0]):
                put -= len(views[0])
                views.pop(0)
            if views and put:
                views[0] = views[0][put:]

    def fsync(self) -> None:
        os.fsync(self.fd)


class BackupFile(BackupArea):
    """The area as a whole file (created if absent; `create=False` refuses a missing
    one). A file this call creates is made durable, directory entry included, before
    it is used: the reshape note on the members may name it after a power cut."""

    def __init__(self, path: str | os.PathLike[str], array_uuid: bytes, reshape_id: bytes,
                 *, create: bool = True) -> None:
        self.path = os.path.abspath(path)
        flags = os.O_RDWR | os.O_CLOEXEC
        created = False
        try:
            if create:
                try:
                    fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
                    created = True
                except FileExistsError:
                    fd = os.open(self.path, flags)
            else:
                fd = os.open(self.path, flags)
        except OSError as e:
            raise FuseraidError(f"{self.path}: cannot open backup file: {e.strerror}") from e
        self._fd = fd
        try:
            if created:
                os.fsync(fd)
                _fsync_dir(os.path.dirname(self.path))
        except OSError as e:
            os.close(fd)
            raise FuseraidError(f"{self.path}: cannot create backup file: {e.strerror}") from e
        super().__init__(_FileStore(fd), 0, None, self.path, array_uuid, reshape_id,
                         {"kind": "file", "path": self.path})

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def clear(self) -> None:
        super().clear()
        os.ftruncate(self._fd, HEADER)
        os.fsync(self._fd)


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(e: BaseException) -> str:
    return (e.strerror or str(e)) if isinstance(e, OSError) else str(e)


def reshape_id(desc: str) -> bytes:
    """32 bytes naming one reshape: a hash of its old/new geometry and offsets."""
    return hashlib.sha256(desc.encode()).digest()
