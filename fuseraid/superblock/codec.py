"""md v1.2 superblock codec: bytes <-> `Superblock`, exactly struct mdp_superblock_1 of
Linux include/uapi/linux/raid/md_p.h. Fields keep md's units (512-byte sectors); the
`*_bytes` properties convert. Pure except the two small file helpers at the end."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import struct
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from fuseraid.errors import SuperblockError

MD_SB_MAGIC = 0xA92B4EFC
SECTOR = 512
SB_OFFSET = 4096  # v1.2: the superblock sits 4 KiB from the start of the member
SB_OFFSET_SECTORS = SB_OFFSET // SECTOR
SB_BLOCK = 4096  # we read/write the whole 4 KiB block (header + dev_roles + zero pad)
SB_HEADER = 256
MAX_DEVS = (SB_BLOCK - SB_HEADER) // 2  # 1920: the kernel refuses a larger max_dev
MAX_SECTOR = (1 << 64) - 1  # md's MaxSector: resync_offset of a clean array

# feature_map bits (md_p.h)
MD_FEATURE_BITMAP_OFFSET = 1
MD_FEATURE_RECOVERY_OFFSET = 2
MD_FEATURE_RESHAPE_ACTIVE = 4
MD_FEATURE_BAD_BLOCKS = 8
MD_FEATURE_REPLACEMENT = 16
MD_FEATURE_RESHAPE_BACKWARDS = 32
MD_FEATURE_NEW_OFFSET = 64
MD_FEATURE_RECOVERY_BITMAP = 128
MD_FEATURE_CLUSTERED = 256
MD_FEATURE_JOURNAL = 512
MD_FEATURE_PPL = 1024
MD_FEATURE_MULTIPLE_PPLS = 2048
MD_FEATURE_RAID0_LAYOUT = 4096
MD_FEATURE_ALL = 0x1FFF

# dev_roles values that are not a role number
MD_DISK_ROLE_SPARE = 0xFFFF
MD_DISK_ROLE_FAULTY = 0xFFFE
MD_DISK_ROLE_JOURNAL = 0xFFFD
MD_DISK_ROLE_MAX = 0xFF00  # role numbers are below this

# devflags bits
WRITE_MOSTLY = 1
FAIL_FAST = 2

# md personalities (sb level): linear -1, multipath -4, faulty -5 decode but nothing runs them
KNOWN_LEVELS = (-5, -4, -1, 0, 1, 4, 5, 6, 10)
# layouts md accepts per level (raid10 is checked structurally)
_RAID5_LAYOUTS = frozenset(range(6))
_RAID6_LAYOUTS = frozenset((0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20))
# raid0: 1 original, 2 alternate; 0 or -1 (what the kernel writes back) = none set
_RAID0_LAYOUTS = frozenset((-1, 0, 1, 2))
_MIN_DISKS = {0: 1, 1: 1, 4: 2, 5: 2, 6: 4, 10: 2}

# The 256-byte header, little endian. Offsets are md_p.h's (checked in the tests).
_HEADER = struct.Struct(
    "<"
    "I I I I"  # magic, major_version, feature_map, pad0            0
    "16s 32s"  # set_uuid, set_name                                 16
    "Q i i Q I I"  # ctime, level, layout, size, chunksize, raid_disks  64
    "i i Q i i I i"  # bitmap_offset|ppl, new_level, reshape_position,
    # delta_disks, new_layout, new_chunk, new_offset               96
    "Q Q Q Q"  # data_offset, data_size, super_offset, recovery_offset  128
    "I I 16s B B H i"  # dev_number, cnt_corrected_read, device_uuid,
    # devflags, bblog_shift, bblog_size, bblog_offset              160
    "Q Q Q I I 32s"  # utime, events, resync_offset, sb_csum, max_dev, pad3  192
)
assert _HEADER.size == SB_HEADER
_CSUM_AT = 216


def calc_sb_1_csum(buf: bytes | bytearray | memoryview, max_dev: int) -> int:
    """md's checksum: 32-bit LE words of the header and dev_roles summed into 64 bits
    (sb_csum counted as 0), then the carry folded back once into 32 bits."""
    size = SB_HEADER + 2 * max_dev
    data = bytearray(buf[:size])
    data[_CSUM_AT : _CSUM_AT + 4] = b"\0\0\0\0"
    words = size // 4
    total = sum(struct.unpack_from(f"<{words}I", data, 0))
    if size % 4:  # max_dev odd: one trailing u16
        total += struct.unpack_from("<H", data, words * 4)[0]
    return ((total & 0xFFFFFFFF) + (total >> 32)) & 0xFFFFFFFF


def written_size(max_dev: int) -> int:
    """Bytes of the 4 KiB block a superblock update writes: header and dev_roles rounded
    up to whole sectors, as mdadm (store_super1) and md (sb_size, per logical block)
    write them. The rest of the block is left as it is: the reshape note lives there
    (fuseraid/migration/note.py)."""
    return -(-(SB_HEADER + 2 * max_dev) // SECTOR) * SECTOR


def encode_time(seconds: float) -> int:
    """md time stamp: seconds in the low 40 bits, microseconds in the high 24."""
    whole = int(seconds)
    usec = int(round((seconds - whole) * 1_000_000)) % 1_000_000
    return (whole & 0xFFFFFFFFFF) | (usec << 40)


def time_seconds(stamp: int) -> int:
    return stamp & 0xFFFFFFFFFF


def time_usec(stamp: int) -> int:
    return stamp >> 40


def format_uuid(raw: bytes) -> str:
    """mdadm's spelling: four groups of 8 hex digits joined by ':'."""
    h = raw.hex()
    return ":".join(h[i : i + 8] for i in range(0, 32, 8))


def _bad(name: str, msg: str) -> SuperblockError:
    return SuperblockError(f"{name}: {msg}")


@dataclass
class Superblock:
    """Every field of struct mdp_superblock_1, in md's units (sectors). Signed fields
    (level, layout, bitmap_offset, new_level, delta_disks, new_layout, new_offset,
    bblog_offset) are Python ints with their sign."""

    magic: int = MD_SB_MAGIC
    major_version: int = 1
    feature_map: int = 0
    pad0: int = 0
    set_uuid: bytes = b"\0" * 16
    set_name: bytes = b""  # up to 32 bytes, stored NUL padded
    ctime: int = 0
    level: int = 0
    layout: int = 0
    size: int = 0  # sectors of each member's data area the array uses
    chunksize: int = 0  # sectors
    raid_disks: int = 0
    bitmap_offset: int = 0  # signed; union with ppl {s16 offset, u16 size}
    new_level: int = 0
    reshape_position: int = 0  # array sectors
    delta_disks: int = 0
    new_layout: int = 0
    new_chunk: int = 0  # sectors
    new_offset: int = 0  # signed sectors added to data_offset by the reshape
    data_offset: int = 0
    data_size: int = 0
    super_offset: int = SB_OFFSET_SECTORS
    recovery_offset: int = 0  # union with journal_tail
    dev_number: int = 0
    cnt_corrected_read: int = 0
    device_uuid: bytes = b"\0" * 16
    devflags: int = 0
    bblog_shift: int = 0
    bblog_size: int = 0
    bblog_offset: int = 0  # signed sectors from the superblock
    utime: int = 0
    events: int = 0
    resync_offset: int = 0
    sb_csum: int = 0
    max_dev: int = 0
    pad3: bytes = b"\0" * 32
    dev_roles: list[int] = field(default_factory=list)

    # ---- decoding / encoding -------------------------------------------------

    @classmethod
    def decode(cls, buf: bytes, name: str, *, member_size: int | None = None) -> Superblock:
        """Parse the 4 KiB superblock block (bytes 4096..8191 of a member). `name` goes
        into every error; `member_size` (bytes), when given, is checked against the
        data area. Raises SuperblockError with one line naming the member and field."""
        if len(buf) < SB_HEADER:
            raise _bad(name, f"truncated member: {len(buf)} bytes of superblock at "
                       f"{SB_OFFSET}, need {SB_HEADER}")
        magic = struct.unpack_from("<I", buf, 0)[0]
        if magic != MD_SB_MAGIC:
            raise _bad(name, f"no md superblock (magic 0x{magic:08x} at {SB_OFFSET})")
        sb = cls._unpack(buf)
        if sb.major_version != 1:
            raise _bad(name, f"unknown superblock major_version {sb.major_version}"
                       " (only 1.x is md v1)")
        if sb.max_dev > MAX_DEVS:
            raise _bad(name, f"max_dev {sb.max_dev} is larger than {MAX_DEVS}")
        need = SB_HEADER + 2 * sb.max_dev
        if len(buf) < need:
            raise _bad(name, f"truncated member: superblock with max_dev {sb.max_dev} "
                       f"needs {need} bytes at {SB_OFFSET}, have {len(buf)}")
        sb.dev_roles = list(struct.unpack_from(f"<{sb.max_dev}H", buf, SB_HEADER))
        want = calc_sb_1_csum(buf, sb.max_dev)
        if want != sb.sb_csum:
            raise _bad(name, f"bad superblock checksum 0x{sb.sb_csum:08x}, expected "
                       f"0x{want:08x}")
        sb.check(name, member_size=member_size)
        return sb

    @classmethod
    def _unpack(cls, buf: bytes) -> Superblock:
        v = _HEADER.unpack_from(buf, 0)
        names = [f.name for f in dataclasses.fields(cls) if f.name != "dev_roles"]
        kw = dict(zip(names, v, strict=True))
        kw["set_name"] = kw["set_name"].rstrip(b"\0")
        return cls(**kw)

    def pack(self) -> bytes:
        """The 4 KiB block as it is now, without checking anything and with sb_csum as
        stored (tests use it to build corrupt superblocks)."""
        if len(self.dev_roles) != self.max_dev:
            raise SuperblockError(f"dev_roles has {len(self.dev_roles)} entries but "
                                  f"max_dev is {self.max_dev}")
        name = self.set_name
        if len(name) > 32:
            raise SuperblockError(f"set_name is {len(name)} bytes, md allows 32")
        vals = [getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "dev_roles"]
        out = bytearray(SB_BLOCK)
        _HEADER.pack_into(out, 0, *vals)
        struct.pack_into(f"<{self.max_dev}H", out, SB_HEADER, *self.dev_roles)
        return bytes(out)

    def encode(self, *, name: str = "superblock", check: bool = True) -> bytes:
        """The 4 KiB block with sb_csum filled in (also stored in self.sb_csum).
        Refuses (SuperblockError) a superblock md would refuse, unless check=False."""
        if check:
            self.check(name)
        raw = bytearray(self.pack())
        self.sb_csum = calc_sb_1_csum(raw, self.max_dev)
        struct.pack_into("<I", raw, _CSUM_AT, self.sb_csum)
        return bytes(raw)

    # ---- consistency -----------------------------------------------------------

    def check(self, name: str, *, member_size: int | None = None) -> None:
        """Raise SuperblockError naming the first field that md (or sense) refuses."""
        if self.magic != MD_SB_MAGIC:
            raise _bad(name, f"no md superblock (magic 0x{self.magic:08x} at {SB_OFFSET})")
        if self.major_version != 1:
            raise _bad(name, f"unknown superblock major_version {self.major_version}")
        if self.feature_map & ~MD_FEATURE_ALL:
            raise _bad(name, f"feature_map 0x{self.feature_map:x} has bits md does not "
                       f"know (0x{self.feature_map & ~MD_FEATURE_ALL:x})")
        if self.pad0 or any(self.pad3):
            raise _bad(name, "padding (pad0/pad3) is not zero: unknown md feature")
        if self.super_offset != SB_OFFSET_SECTORS:
            raise _bad(name, f"super_offset {self.super_offset} sectors, expected "
                       f"{SB_OFFSET_SECTORS} (metadata 1.2)")
        if not 0 <= self.max_dev <= MAX_DEVS:
            raise _bad(name, f"max_dev {self.max_dev} is larger than {MAX_DEVS}")
        if len(self.dev_roles) != self.max_dev:
            raise _bad(name, f"dev_roles has {len(self.dev_roles)} entries, max_dev "
                       f"{self.max_dev}")
        if self.level not in KNOWN_LEVELS:
            raise _bad(name, f"level {self.level} is not an md RAID level")
        self._check_shape(name)
        if self.dev_number >= self.max_dev:
            raise _bad(name, f"dev_number {self.dev_number} out of range (max_dev "
                       f"{self.max_dev})")
        self._check_roles(name)
        self._check_offsets(name, member_size)

    def _check_shape(self, name: str) -> None:
        lv = self.level
        reshaping = bool(self.feature_map & MD_FEATURE_RESHAPE_ACTIVE)
        # While a reshape is recorded, level (and the disks before it, raid_disks -
        # delta_disks) describe the old geometry and raid_disks the new one, whose level
        # is new_level: e.g. raid6 on 5 -> raid5 on 3 records level 6 with raid_disks 3.
        # Each count is checked against its own level (md has no stricter check).
        new_lv = self.new_level if reshaping else lv
        if new_lv in _MIN_DISKS and not _MIN_DISKS[new_lv] <= self.raid_disks <= MAX_DEVS:
            raise _bad(name, f"raid_disks {self.raid_disks} is impossible for raid{new_lv}")
        if reshaping:
            old = self.raid_disks - self.delta_disks
            if not 1 <= old <= MAX_DEVS:
                raise _bad(name, f"delta_disks {self.delta_disks} with raid_disks "
                           f"{self.raid_disks} leaves {old} disks before the reshape")
            if lv in _MIN_DISKS and old < _MIN_DISKS[lv]:
                raise _bad(name, f"delta_disks {self.delta_disks} with raid_disks "
                           f"{self.raid_disks} leaves {old} disks, too few for raid{lv}")
        if lv < 0 and not 1 <= self.raid_disks <= MAX_DEVS:
            raise _bad(name, f"raid_disks {self.raid_disks} is impossible")
        if lv in (0, 4, 5, 6, 10) and self.chunksize == 0:
            raise _bad(name, f"chunksize 0 for raid{lv}")
        self._check_layout(name, lv, self.layout, "layout")
        if self.feature_map & MD_FEATURE_RAID0_LAYOUT and lv != 0:
            raise _bad(name, f"feature_map has RAID0_LAYOUT but level is {lv}")
        if self.feature_map & MD_FEATURE_RESHAPE_ACTIVE:
            if self.new_level not in KNOWN_LEVELS:
                raise _bad(name, f"new_level {self.new_level} is not an md RAID level")
            self._check_layout(name, self.new_level, self.new_layout, "new_layout")
            if self.new_level in (0, 4, 5, 6, 10) and self.new_chunk == 0:
                raise _bad(name, f"new_chunk 0 for raid{self.new_level}")

    @staticmethod
    def _check_layout(name: str, level: int, layout: int, what: str) -> None:
        ok = True
        if level == 5:
            ok = layout in _RAID5_LAYOUTS
        elif level == 6:
            ok = layout in _RAID6_LAYOUTS
        elif level == 0:
            ok = layout in _RAID0_LAYOUTS
        elif level == 10:
            # bits 17+ select md's far-set variant: 0, 1 (buggy old) and 2 exist
            near, far, sets = layout & 0xFF, (layout >> 8) & 0xFF, layout >> 17
            ok = layout >= 0 and near >= 1 and far >= 1 and sets <= 2
        if not ok:
            raise _bad(name, f"{what} {layout} is not a raid{level} layout md knows")

    def _check_roles(self, name: str) -> None:
        # While shrinking, roles up to the old raid_disks are still in use.
        limit = self.raid_disks + max(0, -self.delta_disks
                                      if self.feature_map & MD_FEATURE_RESHAPE_ACTIVE else 0)
        seen: dict[int, int] = {}
        for slot, r in enumerate(self.dev_roles):
            if r in (MD_DISK_ROLE_SPARE, MD_DISK_ROLE_FAULTY, MD_DISK_ROLE_JOURNAL):
                continue
            if r >= limit:
                raise _bad(name, f"dev_roles[{slot}] = {r} but raid_disks is "
                           f"{self.raid_disks}")
            seen[r] = seen.get(r, 0) + 1
            if seen[r] > 2:  # two is a device plus its replacement
                raise _bad(name, f"dev_roles lists role {r} more than twice")

    def _check_offsets(self, name: str, member_size: int | None) -> None:
        sb_end = self.super_offset + -(-(SB_HEADER + 2 * self.max_dev) // SECTOR)
        if self.data_offset < sb_end:
            raise _bad(name, f"data_offset {self.data_offset} sectors lies inside the "
                       f"superblock area (ends at sector {sb_end})")
        if self.feature_map & MD_FEATURE_NEW_OFFSET and self.new_data_offset < sb_end:
            raise _bad(name, f"new_offset {self.new_offset} puts the new data offset "
                       f"{self.new_data_offset} inside the superblock area")
        if self.bblog_size and self.bblog_offset:
            start = self.super_offset + self.bblog_offset
            if start < sb_end or start + self.bblog_size > self.data_offset:
                raise _bad(name, f"bblog_offset {self.bblog_offset} / bblog_size "
                           f"{self.bblog_size} overlap the superblock or the data")
        if self.data_size < 10:  # the kernel's own lower bound
            raise _bad(name, f"data_size {self.data_size} sectors is too small")
        if self.level > 0 and self.size > self.data_size:
            raise _bad(name, f"size {self.size} sectors exceeds data_size "
                       f"{self.data_size}")
        if member_size is not None:
            end = (self.data_offset + self.data_size) * SECTOR
            if end > member_size:
                raise _bad(name, f"truncated member: data area ends at byte {end} "
                           f"(data_offset+data_size) but the member has {member_size}")

    # ---- derived values ------------------------------------------------------

    @property
    def role(self) -> int:
        """This member's dev_roles entry (a role number, or a MD_DISK_ROLE_* value)."""
        if self.dev_number < len(self.dev_roles):
            return self.dev_roles[self.dev_number]
        return MD_DISK_ROLE_SPARE

    @property
    def name(self) -> str:
        return self.set_name.split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def is_clean(self) -> bool:
        return self.resync_offset == MAX_SECTOR

    @property
    def reshape_active(self) -> bool:
        return bool(self.feature_map & MD_FEATURE_RESHAPE_ACTIVE)

    @property
    def ppl_offset(self) -> int:
        """Signed sectors from the superblock (the ppl half of the bitmap_offset union)."""
        low = self.bitmap_offset & 0xFFFF
        return low - 0x10000 if low & 0x8000 else low

    @property
    def ppl_size(self) -> int:
        return (self.bitmap_offset >> 16) & 0xFFFF

    @property
    def journal_tail(self) -> int:
        return self.recovery_offset

    @property
    def new_data_offset(self) -> int:
        """Data offset (sectors) of the new geometry; data_offset when it does not move."""
        if self.feature_map & MD_FEATURE_NEW_OFFSET:
            return self.data_offset + self.new_offset
        return self.data_offset

    @property
    def data_offset_bytes(self) -> int:
        return self.data_offset * SECTOR

    @property
    def new_data_offset_bytes(self) -> int:
        return self.new_data_offset * SECTOR

    @property
    def data_size_bytes(self) -> int:
        return self.data_size * SECTOR

    @property
    def size_bytes(self) -> int:
        return self.size * SECTOR

    @property
    def super_offset_bytes(self) -> int:
        return self.super_offset * SECTOR

    @property
    def chunk_bytes(self) -> int:
        return self.chunksize * SECTOR

    @property
    def new_chunk_bytes(self) -> int:
        return self.new_chunk * SECTOR

    @property
    def reshape_position_bytes(self) -> int:
        return self.reshape_position * SECTOR

    @property
    def recovery_offset_bytes(self) -> int:
        return self.recovery_offset * SECTOR

    @property
    def resync_offset_bytes(self) -> int | None:
        """None when clean (md's MaxSector)."""
        return None if self.is_clean else self.resync_offset * SECTOR

    def replace(self, **changes: object) -> Superblock:
        """A copy with some fields changed (dev_roles copied, never shared)."""
        out = dataclasses.replace(self, **changes)  # type: ignore[arg-type]
        if "dev_roles" not in changes:
            out.dev_roles = list(self.dev_roles)
        return out

    # ---- new superblocks ---------------------------------------------------------

    @classmethod
    def new(
        cls,
        *,
        level: int,
        raid_disks: int,
        role: int,
        member_bytes: int,
        dev_size: int,
        chunk: int = 0,
        layout: int = 0,
        data_offset: int | None = None,
        name: str = "",
        homehost: str | None = None,
        set_uuid: bytes | None = None,
        device_uuid: bytes | None = None,
        ctime: float | None = None,
        events: int = 0,
        clean: bool = True,
        dev_number: int | None = None,
        dev_roles: list[int] | None = None,
        feature_map: int = 0,
        missing: Collection[int] = (),
    ) -> Superblock:
        """A fresh superblock for one member as `mdadm --create` (4.2) writes it.

        Units are bytes: member_bytes (whole member), dev_size (data bytes per member
        the array uses; md's sb size, 0 for raid0 like mdadm), chunk, data_offset
        (default: `default_data_offset(member_bytes, chunk)`). `role` is this member's
        role; dev_number defaults to it and dev_roles to [0..raid_disks-1] + spares,
        with the roles in `missing` (a degraded create) left as spare slots like mdadm.
        All members of one array must share set_uuid and ctime. member_bytes is
        rounded down to whole sectors."""
        if data_offset is None:
            data_offset = default_data_offset(member_bytes, chunk)
        for what, v in (("dev_size", dev_size), ("chunk", chunk),
                        ("data_offset", data_offset)):
            if v < 0 or v % SECTOR:
                raise SuperblockError(f"{what} {v} is not a whole number of sectors")
        doff = data_offset // SECTOR
        dsize = member_bytes // SECTOR - doff
        if dsize <= 0:
            raise SuperblockError(f"member of {member_bytes} bytes is too small for data "
                                  f"offset {data_offset}")
        if dev_roles is None:
            # mdadm: 256 + 2 per device rounded up to 512 bytes -> 128 slots for <= 128
            max_dev = (-(-(SB_HEADER + 2 * raid_disks) // SECTOR) * SECTOR - SB_HEADER) // 2
            dev_roles = [r if r < raid_disks and r not in missing else MD_DISK_ROLE_SPARE
                         for r in range(max_dev)]
        stamp = encode_time(int(time.time()) if ctime is None else ctime)  # mdadm: whole s
        # bad-block log as mdadm: 8 sectors (512 entries) after a 4 KiB gap reserved
        # for a bitmap, i.e. 8 + choose_bm_space(sb size) sectors from the superblock
        bblog_offset = SB_OFFSET_SECTORS + _bm_space(dev_size // SECTOR)
        bblog_size = 8
        if doff < SB_OFFSET_SECTORS + bblog_offset + bblog_size:
            bblog_offset = bblog_size = 0
        if level == 0 and layout:
            feature_map |= MD_FEATURE_RAID0_LAYOUT
        sb = cls(
            feature_map=feature_map,
            set_uuid=set_uuid if set_uuid is not None else secrets.token_bytes(16),
            set_name=make_set_name(name, homehost).encode(),
            ctime=stamp,
            level=level,
            layout=layout,
            size=dev_size // SECTOR,
            chunksize=chunk // SECTOR,
            raid_disks=raid_disks,
            new_level=0,
            data_offset=doff,
            data_size=dsize,
            super_offset=SB_OFFSET_SECTORS,
            dev_number=role if dev_number is None else dev_number,
            device_uuid=device_uuid if device_uuid is not None else secrets.token_bytes(16),
            bblog_size=bblog_size,
            bblog_offset=bblog_offset,
            utime=stamp,
            events=events,
            resync_offset=MAX_SECTOR if clean else 0,
            max_dev=len(dev_roles),
            dev_roles=list(dev_roles),
        )
        sb.check("new superblock", member_size=member_bytes // SECTOR * SECTOR)
        if sb.role != role:
            raise SuperblockError(f"dev_roles[{sb.dev_number}] is {sb.role}, not role {role}")
        return sb


def _bm_space(size_sectors: int) -> int:
    """mdadm's choose_bm_space: room kept for a future write-intent bitmap."""
    if size_sectors < 64 * 2:
        return 0
    if size_sectors - 64 * 2 >= 200 * 1024 * 1024 * 2:
        return 128 * 2
    if size_sectors - 4 * 2 > 8 * 1024 * 1024 * 2:
        return 64 * 2
    return 4 * 2


def default_data_offset(member_bytes: int, chunk: int) -> int:
    """mdadm 4.2's data offset for v1.2 (bytes): superblock + bitmap space + reshape
    headroom (about 0.1% of the member, at most 128 MiB, halved only while it is
    at least 4 chunks), rounded
    up to 1 MiB. mdadm takes it from the first member and uses it for all."""
    devsize = member_bytes // SECTOR
    chunk_kib = chunk // 1024
    headroom = 128 * 1024 * 2
    while (headroom << 10) > devsize and (chunk_kib == 0 or headroom // 2 >= chunk_kib * 2 * 2):
        headroom >>= 1
    sectors = 12 * 2 + _bm_space(devsize) + headroom
    one_meg = 2 * 1024
    sectors = -(-sectors // one_meg) * one_meg
    return sectors * SECTOR


def make_set_name(name: str, homehost: str | None = None) -> str:
    """mdadm's set_name: "homehost:name" unless name already has a ':' or it would not
    fit in 31 bytes; homehost defaults to this machine's host name."""
    if homehost is None:
        homehost = socket.gethostname().split(".", 1)[0]
    if not name:
        name = "0"
    if homehost and ":" not in name and len(homehost) + 1 + len(name) < 32:
        return f"{homehost}:{name}"
    return name.encode()[:31].decode("utf-8", "ignore")


def read_superblock(path: str | os.PathLike[str]) -> Superblock:
    """Read and decode the superblock of a member file or block device."""
    name = os.fspath(path)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SuperblockError(f"{name}: cannot open: {e.strerror}") from e
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        buf = os.pread(fd, SB_BLOCK, SB_OFFSET)
    except OSError as e:
        raise SuperblockError(f"{name}: cannot read superblock: {e.strerror}") from e
    finally:
        os.close(fd)
    if len(buf) < SB_HEADER:
        raise _bad(name, f"truncated member: {size} bytes, no room for a superblock at "
                   f"{SB_OFFSET}")
    return Superblock.decode(buf, name, member_size=size)


class _Readable(Protocol):
    path: str
    size: int

    def pread(self, off: int, n: int) -> bytes: ...


def read_member_superblock(member: _Readable) -> Superblock:
    """Decode the superblock of an open Member (anything with path, size and pread);
    a member too short for the 4 KiB block is reported as truncated, not as an I/O
    error."""
    n = max(0, min(SB_BLOCK, member.size - SB_OFFSET))
    if n < SB_HEADER:
        raise _bad(member.path, f"truncated member: {member.size} bytes, no room for a "
                   f"superblock at {SB_OFFSET}")
    return Superblock.decode(member.pread(SB_OFFSET, n), member.path, member_size=member.size)


def write_superblock(target: str | os.PathLike[str] | int, sb: Superblock) -> None:
    """Write the 4 KiB superblock block at 4096 (encode() fills sb_csum) and fsync.
    `target` is a path or an open, writable file descriptor (left open)."""
    raw = sb.encode(name=str(target))
    fd = target if isinstance(target, int) else os.open(os.fspath(target),
                                                        os.O_WRONLY | os.O_CLOEXEC)
    try:
        done = 0
        while done < len(raw):
            n = os.pwrite(fd, raw[done:], SB_OFFSET + done)
            if n <= 0:
                raise OSError(0, "short write")
            done += n
        os.fsync(fd)
    except OSError as e:
        raise SuperblockError(f"{target}: cannot write superblock: {e.strerror}") from e
    finally:
        if not isinstance(target, int):
            os.close(fd)
