"""md raid1: every role holds the whole array at the same data offset."""

from __future__ import annotations

from .extents import ExtentDriver

# raid1 has no chunk; maintenance walks the array in 1 MiB rows
RAID1_ROW = 1 << 20


class Raid1Driver(ExtentDriver):
    """Reads take the first live mirror; writes go to every live mirror."""

    @property
    def max_missing(self) -> int:  # type: ignore[override]
        return self.geometry.raid_disks - 1

    def _row_bytes(self) -> int:
        return RAID1_ROW
