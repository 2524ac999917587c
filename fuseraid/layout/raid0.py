"""raid0: chunks striped over zones (raid0.c create_strip_zones / find_zone /
map_sector). Zone 0 stripes over every role up to the smallest member; each later
zone stripes over the roles that are still longer. Layout "original" (1) picks the
member from the array chunk number, "alternate" (2) from the chunk number within
the zone; they differ only in later zones with more than one member."""

from __future__ import annotations

from dataclasses import dataclass

from fuseraid.errors import GeometryError
from fuseraid.layout.base import Extent, Layout, merge_extents
from fuseraid.layout.geometry import Geometry

RAID0_ORIG_LAYOUT, RAID0_ALT_MULTIZONE_LAYOUT = 1, 2


@dataclass(frozen=True)
class Zone:
    array_start: int
    array_end: int
    dev_start: int  # member offset where the zone begins on each of its roles
    roles: tuple[int, ...]  # in role order, as create_strip_zones lists them

    @property
    def dev_end(self) -> int:
        return self.dev_start + (self.array_end - self.array_start) // len(self.roles)


def build_zones(g: Geometry) -> tuple[Zone, ...]:
    sizes = g.role_sizes()
    zones = []
    array_pos = dev_start = 0
    for level in sorted(set(sizes)):
        roles = tuple(r for r, s in enumerate(sizes) if s > dev_start)
        span = (level - dev_start) * len(roles)
        zones.append(Zone(array_pos, array_pos + span, dev_start, roles))
        array_pos += span
        dev_start = level
    return tuple(zones)


class Raid0Layout(Layout):
    def __init__(self, geometry: Geometry) -> None:
        if geometry.level != 0:
            raise GeometryError(f"raid{geometry.level} is not raid0")
        super().__init__(geometry)
        self.chunk = geometry.chunk
        self.stripe_size = geometry.raid_disks * geometry.chunk
        self.zones = build_zones(geometry)
        # md treats a layout-less array as original when it cannot matter
        self.by_zone_chunk = geometry.layout == RAID0_ALT_MULTIZONE_LAYOUT

    def _zone_of(self, offset: int) -> Zone:
        for z in self.zones:
            if offset < z.array_end:
                return z
        raise GeometryError(f"offset {offset} beyond the array")

    def map(self, offset: int, length: int) -> list[Extent]:
        self.check_range(offset, length)
        c = self.chunk
        out = []
        end = offset + length
        while offset < end:
            z = self._zone_of(offset)
            zoff = offset - z.array_start
            intra = offset % c
            n = min(c - intra, end - offset)
            nb = len(z.roles)
            pick = (zoff if self.by_zone_chunk else offset) // c
            role = z.roles[pick % nb]
            dev = z.dev_start + zoff // (nb * c) * c + intra
            out.append(Extent(offset, n, ((role, dev),)))
            offset += n
        return merge_extents(out)

    def locate(self, role: int, dev_offset: int) -> int | None:
        if not 0 <= role < self.geometry.raid_disks:
            raise GeometryError(f"role {role} outside raid0 of {self.geometry.raid_disks} disks")
        c = self.chunk
        for z in self.zones:
            if role in z.roles and z.dev_start <= dev_offset < z.dev_end:
                nb = len(z.roles)
                idx = z.roles.index(role)
                dev_chunk, intra = divmod(dev_offset - z.dev_start, c)
                first = 0 if self.by_zone_chunk else z.array_start // c
                zchunk = dev_chunk * nb + (idx - first) % nb
                return z.array_start + zchunk * c + intra
        return None
