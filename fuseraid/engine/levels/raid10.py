"""md raid10: near/far/offset copies (the layout owns the placement)."""

from __future__ import annotations

from .extents import ExtentDriver


class Raid10Driver(ExtentDriver):
    """Any set of missing roles is fine as long as every block keeps one live copy;
    requests that hit a block without one fail with MemberIOError."""

    @property
    def max_missing(self) -> int:  # type: ignore[override]
        return self.geometry.raid_disks - 1  # an upper bound; the real test is per block

    def _row_bytes(self) -> int:
        # one chunk per role: raid_disks chunks of array bytes
        return self.geometry.chunk * self.geometry.raid_disks
