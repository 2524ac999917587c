"""md raid0: striping over zones (the layout owns the zone math)."""

from __future__ import annotations

from fuseraid.errors import FuseraidError

from .extents import ExtentDriver


class Raid0Driver(ExtentDriver):
    """md raid0 (zones come from the layout). No redundancy: nothing to scrub or rebuild."""

    def _row_bytes(self) -> int:
        return self.geometry.chunk * self.geometry.raid_disks

    def _scrub(self, start_row: int, end_row: int, repair: bool) -> int:
        return 0  # md has no check for raid0: there is nothing to compare

    def _resync(self, start_row: int, end_row: int) -> None:
        return None

    def _rebuild(self, role: int, start_row: int, end_row: int) -> None:
        raise FuseraidError("raid0 has no redundancy: a lost member cannot be rebuilt")
