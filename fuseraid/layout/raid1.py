"""raid1: every member holds the whole array at the same offset."""

from __future__ import annotations

from fuseraid.errors import GeometryError
from fuseraid.layout.base import Extent, Layout
from fuseraid.layout.geometry import SECTOR, Geometry


class Raid1Layout(Layout):
    def __init__(self, geometry: Geometry) -> None:
        if geometry.level != 1:
            raise GeometryError(f"raid{geometry.level} is not raid1")
        super().__init__(geometry)
        self.stripe_size = SECTOR  # no parity: a sector is the smallest md unit

    def map(self, offset: int, length: int) -> list[Extent]:
        self.check_range(offset, length)
        if length == 0:
            return []
        copies = tuple((role, offset) for role in range(self.geometry.raid_disks))
        return [Extent(offset, length, copies)]

    def locate(self, role: int, dev_offset: int) -> int | None:
        if not 0 <= role < self.geometry.raid_disks:
            raise GeometryError(f"role {role} outside raid1 of {self.geometry.raid_disks} disks")
        return dev_offset if 0 <= dev_offset < self.array_size else None
