"""An md array's geometry (level, disks, layout number, chunk, per-member size) and
the sizes md derives from it. Pure arithmetic; units are bytes."""

from __future__ import annotations

from dataclasses import dataclass

from fuseraid.errors import GeometryError

SECTOR = 512
MIN_CHUNK = 4096  # md refuses chunks below a page
LEVELS = (0, 1, 4, 5, 6, 10)

# md's raid5/6 algorithm numbers (raid5.h); raid5 accepts 0..5 only
RAID5_LAYOUTS = frozenset(range(6))
RAID6_LAYOUTS = frozenset((*range(6), 8, 9, 10, 16, 17, 18, 19, 20))
RAID4_LAYOUTS = frozenset((0, 5))  # md ignores it; 5 (parity-last) after takeover
RAID0_LAYOUTS = frozenset((0, 1, 2))  # none, original, alternate


@dataclass(frozen=True)
class Raid10Params:
    """raid10's layout number decoded as raid10.c setup_geo does."""

    near: int
    far: int
    offset: bool
    far_set_mode: int  # bits 17-18: 0 original, 1 sets of disks/far, 2 sets of near*far

    @property
    def copies(self) -> int:
        return self.near * self.far

    def far_set_size(self, raid_disks: int) -> int:
        if self.far_set_mode == 0:
            return raid_disks
        if self.far_set_mode == 1:
            return raid_disks // self.far
        return self.far * self.near


def decode_raid10(layout: int) -> Raid10Params:
    """Split a raid10 layout number: near copies bits 0-7, far copies bits 8-15, offset
    flag bit 16, far-set mode bits 17-18; anything above is not a layout md knows."""
    if layout < 0 or layout >> 19 or (layout >> 17) > 2:
        raise GeometryError(f"unknown raid10 layout {layout:#x}")
    return Raid10Params(
        near=layout & 0xFF,
        far=(layout >> 8) & 0xFF,
        offset=bool(layout & (1 << 16)),
        far_set_mode=layout >> 17,
    )


def encode_raid10(near: int, far: int = 1, offset: bool = False, far_set_mode: int = 0) -> int:
    """The raid10 layout number for the given copies (inverse of decode_raid10)."""
    if not (1 <= near <= 255 and 1 <= far <= 255 and 0 <= far_set_mode <= 2):
        raise GeometryError(f"raid10 copies out of range: near={near} far={far}")
    return near | (far << 8) | (int(offset) << 16) | (far_set_mode << 17)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class Geometry:
    """An md array's shape. dev_size is md's per-member "size" (bytes of each
    member's data area in use); member_sizes gives raid0's per-role sizes when the
    members differ (zones), else None."""

    level: int
    raid_disks: int
    layout: int
    chunk: int
    dev_size: int
    member_sizes: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def data_disks(self) -> int:
        """Members' worth of data per row: raid_disks minus parity; 1 for raid1; for
        raid10 raid_disks // copies (informational: raid10 copies need not divide)."""
        if self.level == 0:
            return self.raid_disks
        if self.level == 1:
            return 1
        if self.level in (4, 5):
            return self.raid_disks - 1
        if self.level == 6:
            return self.raid_disks - 2
        return self.raid_disks // decode_raid10(self.layout).copies

    @property
    def copies(self) -> int:
        """How many copies of each array byte the members hold (parity not counted)."""
        if self.level == 1:
            return self.raid_disks
        if self.level == 10:
            return decode_raid10(self.layout).copies
        return 1

    @property
    def raid10(self) -> Raid10Params:
        if self.level != 10:
            raise GeometryError(f"raid{self.level} has no raid10 layout")
        return decode_raid10(self.layout)

    def role_sizes(self) -> tuple[int, ...]:
        """Each role's data bytes as md uses them (raid0: rounded down to the chunk,
        create_strip_zones)."""
        sizes = self.member_sizes or (self.dev_size,) * self.raid_disks
        if self.chunk:
            return tuple(s // self.chunk * self.chunk for s in sizes)
        return tuple(sizes)

    @property
    def array_size(self) -> int:
        """Bytes the array exposes, as md computes it."""
        if self.level == 0:
            return sum(self.role_sizes())  # raid0_size
        if self.level == 1:
            return self.dev_size
        if self.level in (4, 5, 6):
            return self.dev_size // self.chunk * self.chunk * self.data_disks  # raid5_size
        return raid10_array_chunks(self) * self.chunk

    @property
    def dev_used(self) -> int:
        """Bytes of each member's data area that hold array data, parity or copies."""
        if self.level in (4, 5, 6):
            return self.dev_size // self.chunk * self.chunk
        if self.level == 10:
            return raid10_dev_chunks(self) * self.chunk
        if self.level == 0:
            return max(self.role_sizes())
        return self.dev_size


def raid10_far_disk(p: Raid10Params, raid_disks: int, d: int) -> int:
    """The disk holding the next far copy of a block on disk d (__raid10_find_phys):
    near-copies further on, wrapping within d's far set; a short tail of disks joins
    the last set."""
    fss = p.far_set_size(raid_disks)
    last_start = (raid_disks // fss - 1) * fss
    group = d // fss
    d += p.near
    if raid_disks % fss and d > last_start:
        return (d - last_start) % (fss + raid_disks % fss) + last_start
    return d % fss + fss * group


def _raid10_safe(p: Raid10Params, raid_disks: int) -> str | None:
    """Why md's placement for this layout would lose copies, or None. md accepts some
    far-set layouts with only a warning; they put two copies on one disk."""
    fss = p.far_set_size(raid_disks)
    if fss > raid_disks:
        return f"far sets of {fss} disks on {raid_disks} disks"
    if p.offset and p.far > 1 and raid_disks % p.near:
        # a chunk's near copies wrap one chunk down, onto the row its far copies use
        return "offset copies with near copies that wrap rows"
    row = list(range(raid_disks))
    for _ in range(1, p.far):
        row = [raid10_far_disk(p, raid_disks, d) for d in row]
        if sorted(row) != list(range(raid_disks)):
            return "far copies of one row collide"
    for chunk in range(raid_disks):  # device pattern repeats within raid_disks chunks
        disks = []
        for n in range(p.near):
            d = (chunk * p.near + n) % raid_disks
            disks.append(d)
            for _ in range(1, p.far):
                d = raid10_far_disk(p, raid_disks, d)
                disks.append(d)
        if len(set(disks)) != len(disks):
            return "two copies of a chunk on one disk"
    return None


def raid10_dev_chunks(g: Geometry) -> int:
    """Chunks per member md uses (raid10.c calc_sectors: conf->dev_sectors)."""
    p = decode_raid10(g.layout)
    array_chunks = g.dev_size // g.chunk // p.far * g.raid_disks // p.near
    return -(-array_chunks * p.copies // g.raid_disks)


def raid10_array_chunks(g: Geometry) -> int:
    """Array chunks (raid10_size applied to the calc_sectors result)."""
    p = decode_raid10(g.layout)
    return raid10_dev_chunks(g) // p.far * g.raid_disks // p.near


def raid10_stride(g: Geometry) -> int:
    """Bytes between a chunk's far copies on a member (calc_sectors' geo.stride)."""
    p = decode_raid10(g.layout)
    if p.offset:
        return g.chunk
    return raid10_dev_chunks(g) // p.far * g.chunk


def _validate(g: Geometry) -> None:
    lv = f"raid{g.level}"
    if g.level not in LEVELS:
        raise GeometryError(f"unknown RAID level {g.level} (expected one of 0, 1, 4, 5, 6, 10)")
    minimum = {0: 1, 1: 1, 4: 2, 5: 2, 6: 4, 10: 2}[g.level]
    if g.raid_disks < minimum:
        raise GeometryError(f"{lv} needs at least {minimum} disks, got {g.raid_disks}")
    if g.level == 1:
        if g.chunk != 0:
            raise GeometryError(f"raid1 has no chunk, got {g.chunk}")
        if g.layout != 0:
            raise GeometryError(f"raid1 has no layout, got {g.layout}")
    elif not _is_pow2(g.chunk) or g.chunk < MIN_CHUNK:
        raise GeometryError(f"chunk must be a power of two >= 4 KiB, got {g.chunk}")
    if g.dev_size <= 0 or g.dev_size % SECTOR:
        raise GeometryError(f"member size must be a positive multiple of 512, got {g.dev_size}")
    if g.member_sizes is not None:
        if g.level != 0:
            raise GeometryError(f"per-member sizes apply to raid0 only, not {lv}")
        if len(g.member_sizes) != g.raid_disks:
            raise GeometryError(
                f"raid0 has {g.raid_disks} disks but {len(g.member_sizes)} member sizes")
        if any(s <= 0 or s % SECTOR for s in g.member_sizes):
            raise GeometryError("member sizes must be positive multiples of 512")
    if g.level != 1 and min(g.member_sizes or (g.dev_size,)) < g.chunk:
        raise GeometryError(f"member size smaller than one chunk ({g.chunk} bytes)")
    if g.level == 0:
        if g.layout not in RAID0_LAYOUTS:
            raise GeometryError(f"unknown raid0 layout {g.layout}")
        sizes = g.role_sizes()
        # zone 1 with more than one device maps differently per layout (raid0.c)
        if g.layout == 0 and sum(s > min(sizes) for s in sizes) > 1:
            raise GeometryError("multi-zone raid0 needs layout original (1) or alternate (2)")
    elif g.level == 4 and g.layout not in RAID4_LAYOUTS:
        raise GeometryError(f"unknown raid4 layout {g.layout}")
    elif g.level == 5 and g.layout not in RAID5_LAYOUTS:
        raise GeometryError(f"unknown raid5 layout {g.layout}")
    elif g.level == 6 and g.layout not in RAID6_LAYOUTS:
        raise GeometryError(f"unknown raid6 layout {g.layout}")
    elif g.level == 10:
        p = decode_raid10(g.layout)
        if p.near < 1 or p.far < 1:
            raise GeometryError(f"raid10 layout {g.layout:#x} has zero copies")
        if p.copies < 2 or p.copies > g.raid_disks:
            raise GeometryError(
                f"raid10 needs 2..{g.raid_disks} copies on {g.raid_disks} disks, "
                f"layout {g.layout:#x} has {p.copies}")
        if p.far_set_size(g.raid_disks) < 1:
            raise GeometryError(f"raid10 layout {g.layout:#x} gives empty far sets")
        why = _raid10_safe(p, g.raid_disks)
        if why:
            raise GeometryError(f"raid10 layout {g.layout:#x} is unsafe: {why}")
        if raid10_array_chunks(g) == 0:
            raise GeometryError("raid10 members too small for one chunk of array")
