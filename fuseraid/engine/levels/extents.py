"""Drivers for the levels the layout maps as extents with copies (raid0, raid1, raid10).

Layout.map(off, n) splits a request into extents, each contiguous on every member that
holds a copy of it; reads take one live copy, writes go to every live copy.
Maintenance walks array rows of `row_bytes` and compares or copies between the copies.
"""

from __future__ import annotations

from typing import Any

from fuseraid.errors import MemberIOError

from .base import Driver, OnMemberError, Slot

# md's raid1/raid10 resync works in RESYNC_BLOCK_SIZE (64 KiB) bios and adds a whole
# bio's sectors to mismatch_cnt when a copy differs: we count the same unit.
RESYNC_BLOCK = 64 * 1024


class ExtentDriver(Driver):
    """Shared read/write/scrub/rebuild over Layout.map."""

    def __init__(
        self,
        geometry: Any,
        slots: list[Slot | None],
        on_member_error: OnMemberError | None = None,
    ) -> None:
        super().__init__(geometry, slots, on_member_error)
        self.size = self.layout.array_size
        self.row_bytes = self._row_bytes()
        self.rows = -(-self.size // self.row_bytes) if self.size else 0

    def _row_bytes(self) -> int:
        raise NotImplementedError

    def _row_range(self, start_row: int, end_row: int) -> tuple[int, int]:
        return start_row * self.row_bytes, min(end_row * self.row_bytes, self.size)

    def _live(self, copies: Any) -> list[tuple[int, int]]:
        return [(role, dev) for role, dev in copies if self.slots[role] is not None]

    def _lost(self, ext: Any) -> MemberIOError:
        roles = [role for role, _ in ext.copies]
        return MemberIOError(
            f"raid{self.level}: array bytes [{ext.array_offset}, "
            f"{ext.array_offset + ext.length}) have no live copy (roles {roles} missing)"
        )

    def _read(self, off: int, n: int) -> bytes:
        out = bytearray(n)
        view = memoryview(out)
        reads = []
        for ext in self.layout.map(off, n):
            live = self._live(ext.copies)
            if not live:
                raise self._lost(ext)
            role, dev = live[0]
            at = ext.array_offset - off
            reads.append((role, dev, view[at : at + ext.length]))
        self._gather(reads)
        return bytes(out)

    def _write(self, off: int, data: memoryview) -> None:
        exts = self.layout.map(off, len(data))
        for ext in exts:  # refuse before writing anything that could not be stored
            if not self._live(ext.copies):
                raise self._lost(ext)
        writes = []
        for ext in exts:
            at = ext.array_offset - off
            part = data[at : at + ext.length]
            writes += [(role, dev, part) for role, dev in self._live(ext.copies)]
        self._pwrite_all(writes)
        for ext in exts:
            if not self._live(ext.copies):
                raise self._lost(ext)

    # ---- maintenance -----------------------------------------------------------------
    def _scrub(self, start_row: int, end_row: int, repair: bool) -> int:
        """Compare every live copy with the first live one. Returns md's mismatch_cnt
        unit for raid1/raid10: the sectors of each 64 KiB resync block (of array bytes)
        in which a copy differs, once per differing copy. repair copies the first live
        copy over the others, as md does."""
        lo, hi = self._row_range(start_row, end_row)
        count = 0
        for blk in range(lo, hi, RESYNC_BLOCK):
            blk_len = min(RESYNC_BLOCK, hi - blk)
            differing: set[int] = set()
            for ext in self.layout.map(blk, blk_len):
                live = self._live(ext.copies)
                if len(live) < 2:
                    continue
                first = self._pread(live[0][0], live[0][1], ext.length)
                fixes = []
                for role, dev in live[1:]:
                    if self._pread(role, dev, ext.length) != first:
                        differing.add(role)
                        fixes.append((role, dev, first))
                if repair:
                    self._pwrite_all(fixes)
            count += len(differing) * (blk_len // 512)
        return count

    def _resync(self, start_row: int, end_row: int) -> None:
        """md's resync: make every copy equal to the first live copy."""
        self._scrub(start_row, end_row, True)

    def _rebuild(self, role: int, start_row: int, end_row: int) -> None:
        """Copy onto `role` every block it holds a copy of, from another live copy."""
        lo, hi = self._row_range(start_row, end_row)
        if hi <= lo:
            return
        for ext in self.layout.map(lo, hi - lo):
            targets = [dev for r, dev in ext.copies if r == role]
            if not targets:
                continue
            sources = [(r, dev) for r, dev in self._live(ext.copies) if r != role]
            if not sources:
                raise self._lost(ext)
            data = self._pread(sources[0][0], sources[0][1], ext.length)
            self._pwrite_all([(role, dev, data) for dev in targets])

