"""The reshape note: where a reshape's backup area is, recorded on every member so the next
assembly after a crash finds it with no flag.

It lives in the last KiB of the superblock's 4 KiB block (member bytes 7168..8191). md
reads that block whole but writes back only `256 + 2*max_dev` bytes rounded up to the
logical block size (md.c super_1_load/super_1_sync: rdev->sb_size), mdadm writes the
same rounded to 512 (super1.c store_super1), and so do our commits (engine/state.py);
so the note survives every superblock update while max_dev <= 1408. It must not overlap
an internal bitmap (md may put one 1 KiB after the superblock), a PPL, the bad-block log
or the data: `no_room()` says why it cannot be stored, and the reshape then falls back to
an explicit backup file.

Layout (little endian, NOTE_SIZE bytes): magic, version, kind, array uuid, reshape id
(backup.reshape_id of the plan), device uuid, offset, length, path length, the path
(UTF-8 / file system encoding), zeros, and the SHA-256 of everything before it in the
last 32 bytes. Kind "file": an absolute path; kind "member": the member's device uuid
and the area's byte offset and length on it."""

from __future__ import annotations

import hashlib
import logging
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fuseraid.errors import FuseraidError
from fuseraid.superblock.codec import (
    MD_FEATURE_BITMAP_OFFSET,
    MD_FEATURE_MULTIPLE_PPLS,
    MD_FEATURE_PPL,
    SB_BLOCK,
    SB_HEADER,
    SB_OFFSET,
    SECTOR,
    Superblock,
)

log = logging.getLogger("fuseraid.migration")

NOTE_SIZE = 1024
NOTE_AT = SB_OFFSET + SB_BLOCK - NOTE_SIZE  # member byte offset: 7168
MAGIC = b"FRAIDNT1"
VERSION = 1
FILE, MEMBER = "file", "member"
_KINDS = {FILE: 1, MEMBER: 2}
# magic, version, kind, array uuid, reshape id, device uuid, offset, length, path bytes
_FMT = struct.Struct("<8sHH16s32s16sQQH")
_SUM = 32
MAX_PATH = NOTE_SIZE - _FMT.size - _SUM  # bytes of path a note holds


@dataclass(frozen=True)
class ReshapeNote:
    array_uuid: bytes
    reshape_id: bytes
    kind: str  # FILE or MEMBER
    path: str = ""  # FILE: the backup file's absolute path
    device_uuid: bytes = bytes(16)  # MEMBER: the member holding the area
    offset: int = 0  # MEMBER: the area's first byte on that member
    length: int = 0  # MEMBER: the area's size

    def encode(self) -> bytes:
        """The NOTE_SIZE bytes stored on each member. Raises FuseraidError when the path
        does not fit (the caller falls back to no note)."""
        path = os.fsencode(self.path)
        if len(path) > MAX_PATH:
            raise FuseraidError(f"{self.path}: path longer than {MAX_PATH} bytes")
        if self.kind not in _KINDS:
            raise FuseraidError(f"unknown backup kind {self.kind!r}")
        body = _FMT.pack(MAGIC, VERSION, _KINDS[self.kind], self.array_uuid,
                         self.reshape_id, self.device_uuid, self.offset, self.length,
                         len(path)) + path
        body = body.ljust(NOTE_SIZE - _SUM, b"\0")
        return body + hashlib.sha256(body).digest()

    @classmethod
    def decode(cls, buf: bytes) -> ReshapeNote | None:
        """The note in buf, or None when there is none (zeros, foreign bytes, a torn or
        corrupt note, a version we do not know)."""
        if len(buf) < NOTE_SIZE:
            return None
        body = bytes(buf[: NOTE_SIZE - _SUM])
        if hashlib.sha256(body).digest() != bytes(buf[NOTE_SIZE - _SUM : NOTE_SIZE]):
            return None
        magic, version, kind, uuid, rid, dev, off, length, plen = _FMT.unpack_from(body)
        names = {v: k for k, v in _KINDS.items()}
        if magic != MAGIC or version != VERSION or kind not in names or plen > MAX_PATH:
            return None
        if any(body[_FMT.size + plen :]):
            return None  # bytes after the path are always zero
        path = os.fsdecode(body[_FMT.size : _FMT.size + plen])
        return cls(uuid, rid, names[kind], path, dev, off, length)

    def describe(self) -> str:
        if self.kind == FILE:
            return f"backup file {self.path}"
        return (f"backup area of {self.length} bytes at byte {self.offset} of the member "
                f"with device uuid {self.device_uuid.hex()}")


def no_room(sb: Superblock, lowest_data: int | None = None) -> str | None:
    """Why this member's superblock block has no room for a note (None: it has). Byte
    ranges are from the start of the member; lowest_data: the lowest data offset
    (bytes) the reshape uses, default the superblock's."""
    lo, hi = NOTE_AT, NOTE_AT + NOTE_SIZE
    sb_start = sb.super_offset * SECTOR
    if sb_start != SB_OFFSET:
        return f"superblock at byte {sb_start}, not {SB_OFFSET}"
    if sb_start + SB_HEADER + 2 * sb.max_dev > lo:
        return f"max_dev {sb.max_dev} fills the superblock block"
    data = sb.data_offset_bytes if lowest_data is None else lowest_data
    if min(data, sb.data_offset_bytes) < hi:
        return f"the data starts at byte {data}"

    def overlaps(start_sectors: int, sectors: int | None) -> bool:
        a = sb_start + start_sectors * SECTOR
        b = a + sectors * SECTOR if sectors is not None else hi  # unknown: to the block end
        return a < hi and b > lo

    if sb.feature_map & MD_FEATURE_BITMAP_OFFSET and 0 <= sb.bitmap_offset < SB_BLOCK // SECTOR \
            and overlaps(sb.bitmap_offset, None):
        return f"an internal bitmap starts {sb.bitmap_offset} sectors after the superblock"
    if sb.feature_map & (MD_FEATURE_PPL | MD_FEATURE_MULTIPLE_PPLS) \
            and overlaps(sb.ppl_offset, sb.ppl_size):
        return f"the PPL area starts {sb.ppl_offset} sectors after the superblock"
    if sb.bblog_size and sb.bblog_offset and overlaps(sb.bblog_offset, sb.bblog_size):
        return f"the bad-block log starts {sb.bblog_offset} sectors after the superblock"
    return None


def write(members: Iterable[Any], note: ReshapeNote) -> None:
    """Write the note on every member, then fsync each (before the start checkpoint)."""
    raw = note.encode()
    members = list(members)
    for m in members:
        m.pwrite(NOTE_AT, raw)
    for m in members:
        m.fsync()


def read(members: Iterable[Any], array_uuid: bytes, reshape_id: bytes) -> ReshapeNote | None:
    """The note of this array's reshape from the first member that holds one (all hold
    the same); notes of another array or reshape are stale and ignored."""
    for m in members:
        try:
            note = ReshapeNote.decode(m.pread(NOTE_AT, NOTE_SIZE))
        except (OSError, FuseraidError):
            continue  # an unreadable member: another may have it
        if note is not None and (note.array_uuid, note.reshape_id) == (array_uuid,
                                                                        reshape_id):
            return note
    return None


def erase(members: Iterable[Any]) -> None:
    """Zero the note on every member (after the finishing checkpoint). A member that
    fails here keeps an inert note: it names a reshape no superblock records."""
    for m in members:
        try:
            m.pwrite(NOTE_AT, bytes(NOTE_SIZE))
            m.fsync()
        except (OSError, FuseraidError) as e:
            log.warning("cannot erase the reshape note on %s: %s", getattr(m, "path", m), e)
