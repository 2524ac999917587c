"""md raid0: striping over zones (the layout owns the zone math)."""

from __future__ import annotations

from typing import Any

from fuseraid.errors import FuseraidError

from .base import OnMemberError, Slot
from .extents import ExtentDriver


class Raid0Driver(ExtentDriver):
    """md raid0 (zones come from the layout). No redundancy: nothing to scrub or rebuild."""

    def __init__(self, geometry: Any, slots: list[Slot | None],
                 on_member_error: OnMemberError | None = None) -> None:
        super().__init__(geometry, slots, on_member_error)
        lay = self.layout
        # read_now's view of Raid0Layout.map: (array end, array start, dev start, roles)
        self._zones = tuple((z.array_end, z.array_start, z.dev_start, z.roles)
                            for z in lay.zones)  # type: ignore[attr-defined]
        self._by_zone_chunk: bool = lay.by_zone_chunk  # type: ignore[attr-defined]

    def _locate(self, off: int, n: int) -> tuple[int, int] | None:
        """Raid0Layout.map of [off, off+n) inside one chunk, in integers: (role, dev
        offset), or None when it crosses a chunk (or lies outside the array)."""
        c = self.geometry.chunk
        q, intra = divmod(off, c)
        if n <= 0 or off < 0 or intra + n > c:
            return None
        for end, start, dev_start, roles in self._zones:
            if off < end:
                nb = len(roles)
                zoff = off - start
                role = roles[(zoff // c if self._by_zone_chunk else q) % nb]
                return role, dev_start + zoff // (nb * c) * c + intra
        return None

    def read_now(self, off: int, n: int) -> bytes | None:
        at = self._locate(off, n)
        return None if at is None else self._member_now(at[0], at[1], n)

    def write_now(self, off: int, data: Any) -> list[tuple[int, int, Any]] | None:
        at = self._locate(off, len(data))
        if at is None or self.slots[at[0]] is None:
            return None  # several chunks, or the member is gone: the ordinary path
        return [(at[0], at[1], data)]

    def _row_bytes(self) -> int:
        return self.geometry.chunk * self.geometry.raid_disks

    def _scrub(self, start_row: int, end_row: int, repair: bool) -> int:
        return 0  # md has no check for raid0: there is nothing to compare

    def _resync(self, start_row: int, end_row: int) -> None:
        return None

    def _rebuild(self, role: int, start_row: int, end_row: int) -> None:
        raise FuseraidError("raid0 has no redundancy: a lost member cannot be rebuilt")
