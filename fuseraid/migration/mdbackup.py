"""mdadm's backup file (`mdadm --grow --backup-file`), read so that fuseraid can take over
an in-place reshape that Linux md left half done.

Format (mdadm Grow.c, `struct mdp_backup_super`, written by grow_backup/forget_backup,
read by Grow_restart): one 512-byte header at file offset 0, little endian, sectors of
512 bytes:

    0  magic[16]     "md_backup_data-1" (one section) or "md_backup_data-2" (two)
   16  set_uuid[16]  the array's uuid (the superblock's set_uuid bytes)
   32  mtime   u64   seconds, when the header was last written
   40  devstart u64  where the data of section 1 starts in the file (8: right after
                     the 4 KiB header block)
   48  arraystart u64, 56 length u64      section 1: array sectors [arraystart, +length)
   64  sb_csum u32   checksum of bytes 0..63
   68  pad1 u32
   72  devstart2 u64 section 2's data starts devstart2 sectors after section 1's
   80  arraystart2 u64, 88 length2 u64    section 2 ("-2" only)
   96  sb_csum2 u32  checksum of bytes 0..95 ("-2" only)

The checksum is mdadm's bsb_csum: `csum = (csum << 3) + buf[0]` over the length, with
buf[0] a signed char and csum a 32-bit int. (It adds the *first* byte each time, so it
only guards against a header that does not start with the magic; mdadm has always
written and checked it that way, so we compute the same value.)

A section's data is the array's content of those sectors in array order (mdadm
save_stripes reads it through the old geometry). A section whose length is 0 is unused
(forget_backup clears it once md's reshape has passed it). mdadm's own replay
(Grow_restart) writes every used section through the *new* geometry and then moves
reshape_position to the end of the backed-up span (its start, for a backwards reshape):
`restore_md_backup` does the same with fuseraid's drivers."""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.errors import AssemblyError, FuseraidError
from fuseraid.migration import checkpoint
from fuseraid.migration.plan import FORWARD
from fuseraid.superblock.codec import MD_FEATURE_NEW_OFFSET

MAGIC1 = b"md_backup_data-1"
MAGIC2 = b"md_backup_data-2"
SECTOR = 512
HEADER = 512
_HEAD = struct.Struct("<16s16sQQQQIIQQQI")  # up to and including sb_csum2 (100 bytes)
_CSUM1_LEN = 64  # offsetof(sb_csum)
_CSUM2_LEN = 96  # offsetof(sb_csum2)
# mdadm Grow_restart: the array's update time may be at most 2 h after or 10 min before
# the backup's mtime, unless MDADM_GROW_ALLOW_OLD is set
MAX_AFTER = 2 * 60 * 60
MAX_BEFORE = 10 * 60


def bsb_csum(buf: bytes) -> int:
    """mdadm's bsb_csum over all of buf (see the module docstring)."""
    first = buf[0] - 256 if buf and buf[0] >= 128 else (buf[0] if buf else 0)
    csum = 0
    for _ in range(len(buf)):
        csum = ((csum << 3) + first) & 0xFFFFFFFF
    return csum


@dataclass(frozen=True)
class Section:
    """One backed-up range: array bytes [array_start, array_start + length), whose data
    is at file_offset in the backup file."""

    array_start: int
    length: int
    file_offset: int

    @property
    def array_end(self) -> int:
        return self.array_start + self.length


@dataclass(frozen=True)
class MdBackup:
    """A decoded, checked backup file header. `sections`: the used sections (length > 0),
    in header order."""

    path: str
    version: int  # 1 or 2
    set_uuid: bytes
    mtime: int
    devstart: int  # bytes
    sections: tuple[Section, ...]

    @property
    def span(self) -> tuple[int, int] | None:
        """[lo, hi) array bytes covered by the used sections (None: none used)."""
        if not self.sections:
            return None
        return (min(s.array_start for s in self.sections),
                max(s.array_end for s in self.sections))

    def read_section(self, section: Section) -> bytes:
        try:
            with open(self.path, "rb") as f:
                f.seek(section.file_offset)
                data = f.read(section.length)
        except OSError as e:
            raise FuseraidError(f"{self.path}: cannot read md backup: {e.strerror}") from e
        if len(data) != section.length:
            raise FuseraidError(f"{self.path}: md backup section at array sector "
                                f"{section.array_start // SECTOR} is truncated")
        return data


def encode_header(set_uuid: bytes, mtime: int, sections: Sequence[tuple[int, int]],
                  *, version: int | None = None, devstart: int = 8,
                  devstart2: int | None = None) -> bytes:
    """A 512-byte header as mdadm writes it (sections: (arraystart, length) in sectors;
    devstart/devstart2 in sectors). For tests and tools that fabricate backups."""
    version = version or (2 if len(sections) > 1 else 1)
    (a1, l1), (a2, l2) = (list(sections) + [(0, 0), (0, 0)])[:2]
    if devstart2 is None:
        devstart2 = l1
    magic = MAGIC2 if version == 2 else MAGIC1
    head = bytearray(_HEAD.pack(magic, set_uuid, mtime, devstart, a1, l1, 0, 0,
                                devstart2, a2, l2, 0))
    struct.pack_into("<I", head, _CSUM1_LEN, bsb_csum(bytes(head[:_CSUM1_LEN])))
    if version == 2:
        struct.pack_into("<I", head, _CSUM2_LEN, bsb_csum(bytes(head[:_CSUM2_LEN])))
    return bytes(head).ljust(HEADER, b"\0")


def is_md_backup(path: str | os.PathLike[str]) -> bool:
    """Whether the file starts with mdadm's backup magic (nothing else is checked; a
    missing or unreadable file is not one)."""
    try:
        with open(path, "rb") as f:
            return f.read(16) in (MAGIC1, MAGIC2)
    except OSError:
        return False


def read_md_backup(path: str | os.PathLike[str]) -> MdBackup:
    """Decode and check the header (magic, checksums, sections inside the file).
    Raises FuseraidError with one line naming the file and the fault."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            head = f.read(HEADER)
            size = os.fstat(f.fileno()).st_size
    except OSError as e:
        raise FuseraidError(f"{name}: cannot read md backup: {e.strerror}") from e
    if len(head) < _HEAD.size:
        raise FuseraidError(f"{name}: not an md backup file (only {len(head)} bytes)")
    (magic, uuid, mtime, devstart, a1, l1, csum, _pad1, devstart2, a2, l2,
     csum2) = _HEAD.unpack_from(head)
    if magic not in (MAGIC1, MAGIC2):
        raise FuseraidError(f"{name}: not an md backup file (bad magic {magic[:16]!r})")
    version = 2 if magic == MAGIC2 else 1
    if csum != bsb_csum(head[:_CSUM1_LEN]):
        raise FuseraidError(f"{name}: md backup header checksum is wrong "
                            f"({csum:#010x}, expected {bsb_csum(head[:_CSUM1_LEN]):#010x})")
    if version == 2 and csum2 != bsb_csum(head[:_CSUM2_LEN]):
        raise FuseraidError(f"{name}: md backup header checksum2 is wrong "
                            f"({csum2:#010x}, expected {bsb_csum(head[:_CSUM2_LEN]):#010x})")
    raw = [(a1, l1, devstart)]
    if version == 2:
        raw.append((a2, l2, devstart + devstart2))
    sections = []
    for i, (a, n, at) in enumerate(raw, 1):
        if n == 0:
            continue
        s = Section(a * SECTOR, n * SECTOR, at * SECTOR)
        if s.file_offset < HEADER or s.file_offset + s.length > size:
            raise FuseraidError(f"{name}: md backup section {i} (file bytes "
                                f"{s.file_offset}..{s.file_offset + s.length}) is outside "
                                f"the file ({size} bytes)")
        sections.append(s)
    return MdBackup(name, version, uuid, mtime, devstart * SECTOR, tuple(sections))


def _utime_seconds(sb: Any) -> int:
    return sb.utime & ((1 << 40) - 1)  # md v1: low 40 bits seconds, high 24 microseconds


def restore_needed(backup: MdBackup, sb: Any) -> tuple[list[Section], int] | None:
    """What mdadm's Grow_restart would replay for superblock sb: (sections, new
    reshape position in bytes), or None when the backup holds nothing the reshape still
    needs (no used section, or all of them already behind the reshape position).
    Raises AssemblyError when the backup cannot belong to this reshape."""
    if backup.set_uuid != sb.set_uuid:
        raise AssemblyError(f"{backup.path}: md backup belongs to another array "
                            f"(uuid {backup.set_uuid.hex()})")
    span = backup.span
    if span is None:
        return None
    lo, hi = span
    pos = checkpoint.border_of(sb)
    forward = checkpoint.direction_of(sb) == FORWARD
    if (forward and hi <= pos) or (not forward and lo >= pos):
        return None  # md's reshape already passed every backed-up section
    if not lo <= pos <= hi:
        raise AssemblyError(f"{backup.path}: md backup covers array sectors "
                            f"{lo // SECTOR}..{hi // SECTOR} but the reshape position is "
                            f"{pos // SECTOR}: it does not belong to this state")
    return list(backup.sections), hi if forward else lo


def restore_md_backup(backup_path: str | os.PathLike[str], sbset: Any,
                      members_by_role: Sequence[Any], *,
                      allow_old: bool | None = None) -> int | None:
    """Replay md's backup onto the members, as mdadm's Grow_restart does, before fuseraid
    continues an in-place md reshape (RESHAPE_ACTIVE without NEW_OFFSET): every used
    section is written through the new geometry (whole rows, parity computed), the
    members are fsynced, then reshape_position moves to the end of the backed-up span
    (its start when backwards) in one commit. Returns that new position in bytes, or
    None when nothing needed replaying (nothing is written then).

    Refuses (AssemblyError, one line) a backup of another array, a backup whose mtime is
    too far from the superblock's update time (mdadm's window: 2 h after, 10 min before;
    allow_old=True or $MDADM_GROW_ALLOW_OLD accepts it), a reshape that moves the data
    offset (md never uses a backup file then), and sections not made of whole rows of
    the new geometry."""
    sb = sbset.newest
    if not sb.reshape_active:
        raise AssemblyError("no reshape in progress")
    if sb.feature_map & MD_FEATURE_NEW_OFFSET:
        raise AssemblyError(f"{os.fspath(backup_path)}: the reshape moves the data offset; "
                            "md does not use a backup file for it")
    backup = read_md_backup(backup_path)
    todo = restore_needed(backup, sb)
    if todo is None:
        return None
    if allow_old is None:
        allow_old = bool(os.environ.get("MDADM_GROW_ALLOW_OLD"))
    utime = _utime_seconds(sb)
    if not allow_old and not backup.mtime - MAX_BEFORE <= utime <= backup.mtime + MAX_AFTER:
        raise AssemblyError(f"{backup.path}: md backup written at {backup.mtime} is too far "
                            f"from the array's update time {utime} (set "
                            "MDADM_GROW_ALLOW_OLD=1 to accept it)")
    sections, border = todo
    _, new = checkpoint.geometries(sb)
    row = new.data_disks * new.chunk if new.level in (4, 5, 6) else new.chunk or SECTOR
    for s in sections:
        if s.array_start % row or s.length % row or s.array_end > new.array_size:
            raise AssemblyError(f"{backup.path}: md backup section at array sector "
                                f"{s.array_start // SECTOR} (+{s.length // SECTOR}) is not "
                                "whole rows of the new geometry inside the array")
    offset = sb.data_offset_bytes
    slots = [Slot(members_by_role[r], offset)
             if r < len(members_by_role) and members_by_role[r] is not None else None
             for r in range(new.raid_disks)]
    driver = make_driver(new, slots)
    for s in sections:
        driver.write(s.array_start, backup.read_section(s))
    driver.flush()
    sbset.commit(checkpoint.progress(border))
    return border
