"""Drivers for the levels the layout maps as extents with copies (raid0, raid1, raid10).

Layout.map(off, n) splits a request into extents, each contiguous on every member that
holds a copy of it; reads take one live copy, writes go to every live copy.
Maintenance walks array rows of `row_bytes` and compares or copies between the copies.

raid10 far layouts keep their far copies in the second part of every member. While those
may be stale (md's resync pending, as on a fresh raid10; a reshape's near-only pass, whose
far part still holds old data), only the near copies are read (`sync_from`), and during
such a pass only they are written (`hold_far`). See docs/reshape.md.
"""

from __future__ import annotations

from typing import Any

from fuseraid.errors import MemberIOError
from fuseraid.layout.geometry import raid10_stride

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
        # raid10 far layouts: member bytes from here on hold the far copies
        self.far_start: int | None = _far_start(geometry)
        # array bytes from here on: only the near copies are valid (None: all are); a
        # resync (make the far copies) moves it to the end of the rows it did
        self.sync_from: int | None = None
        self.far_writes = True  # False: the far part is not ours to write (yet)

    def hold_far(self) -> None:
        """A reshape pass writing near copies only: the far part still holds old data,
        so nothing writes it and reads use the near copies."""
        if self.far_start is not None:
            self.far_writes = False
            self.sync_from = 0

    def release_far(self) -> None:
        """The far part is ours: writes go to every copy; reads keep to the near copies
        until a resync has made the far ones (sync_from)."""
        self.far_writes = True

    def _row_bytes(self) -> int:
        raise NotImplementedError

    def _row_range(self, start_row: int, end_row: int) -> tuple[int, int]:
        return start_row * self.row_bytes, min(end_row * self.row_bytes, self.size)

    def _live(self, copies: Any) -> list[tuple[int, int]]:
        return [(role, dev) for role, dev in copies if self.slots[role] is not None]

    def _map(self, off: int, n: int) -> list[Any]:
        """layout.map, split at sync_from so an extent is wholly on one side of it."""
        s = self.sync_from
        if self.far_start is None or s is None or not off < s < off + n:
            return self.layout.map(off, n)
        return self.layout.map(off, s - off) + self.layout.map(s, off + n - s)

    def _readable(self, ext: Any) -> list[tuple[int, int]]:
        """Live copies holding valid data: near ones only from sync_from on."""
        live = self._live(ext.copies)
        s, far = self.sync_from, self.far_start
        if far is None or s is None or ext.array_offset < s:
            return live
        return [(role, dev) for role, dev in live if dev < far]

    def _writable(self, ext: Any) -> list[tuple[int, int]]:
        """Live copies a write may go to: not the far part while it is held."""
        live = self._live(ext.copies)
        if self.far_writes or self.far_start is None:
            return live
        return [(role, dev) for role, dev in live if dev < self.far_start]

    def _lost(self, ext: Any) -> MemberIOError:
        roles = [role for role, _ in ext.copies]
        return MemberIOError(
            f"raid{self.level}: array bytes [{ext.array_offset}, "
            f"{ext.array_offset + ext.length}) have no live copy (roles {roles} missing)"
        )

    def read_now(self, off: int, n: int) -> bytes | None:
        """One extent: its first readable copy (as _read_into picks it)."""
        if n <= 0 or off < 0 or off + n > self.size:
            return None
        exts = self._map(off, n)
        if len(exts) != 1:
            return None
        live = self._readable(exts[0])
        if not live:
            return None
        role, dev = live[0]
        return self._member_now(role, dev, n)

    def write_now(self, off: int, data: Any) -> list[tuple[int, int, Any]] | None:
        """One extent: every writable copy (as _write, which refuses what could not
        be stored: so does this, by leaving it to _write)."""
        n = len(data)
        if n <= 0 or off < 0 or off + n > self.size:
            return None
        exts = self._map(off, n)
        if len(exts) != 1 or not self._stored(exts[0]):
            return None
        return [(role, dev, data) for role, dev in self._writable(exts[0])]

    def _read_into(self, off: int, view: memoryview) -> None:
        reads = []
        for ext in self._map(off, len(view)):
            live = self._readable(ext)
            if not live:
                raise self._lost(ext)
            role, dev = live[0]
            at = ext.array_offset - off
            reads.append((role, dev, view[at : at + ext.length]))
        self._gather(reads)

    def _write(self, off: int, data: memoryview) -> None:
        exts = self._map(off, len(data))
        for ext in exts:  # refuse before writing anything that could not be stored
            if not self._stored(ext):
                raise self._lost(ext)
        writes = []
        for ext in exts:
            at = ext.array_offset - off
            part = data[at : at + ext.length]
            writes += [(role, dev, part) for role, dev in self._writable(ext)]
        self.write_blocks(writes)
        for ext in exts:
            if not self._stored(ext):
                raise self._lost(ext)

    def _stored(self, ext: Any) -> bool:
        """Would a write of ext leave a copy that reads will use?"""
        if self.far_start is None:
            return any(self.slots[role] is not None for role, _ in ext.copies)
        readable = self._readable(ext)
        return any(c in readable for c in self._writable(ext))

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
            for ext in self._map(blk, blk_len):
                live = self._live(ext.copies)
                if len(live) < 2:
                    continue
                valid = self._readable(ext)
                if not valid:  # only stale far copies left: nothing to copy from
                    if repair:
                        raise self._lost(ext)
                    continue
                src = valid[0]  # md's first copy: the near one where the far may be stale
                first = self._pread(src[0], src[1], ext.length)
                writable = self._writable(ext)
                fixes = []
                for role, dev in live:
                    if (role, dev) == src:
                        continue
                    if self._pread(role, dev, ext.length) != first:
                        differing.add(role)
                        if (role, dev) in writable:
                            fixes.append((role, dev, first))
                if repair:
                    self.write_blocks(fixes)
            count += len(differing) * (blk_len // 512)
        return count

    def _resync(self, start_row: int, end_row: int) -> None:
        """md's resync: make every copy equal to the first valid copy. Rows done from
        sync_from on have their far copies made: sync_from moves past them."""
        self._scrub(start_row, end_row, True)
        lo, hi = self._row_range(start_row, end_row)
        s = self.sync_from
        if s is not None and self.far_writes and lo <= s < hi:
            self.sync_from = hi if hi < self.size else None

    def _rebuild(self, role: int, start_row: int, end_row: int) -> None:
        """Copy onto `role` every block it holds a copy of, from another live copy."""
        lo, hi = self._row_range(start_row, end_row)
        if hi <= lo:
            return
        for ext in self._map(lo, hi - lo):
            targets = [dev for r, dev in self._writable(ext) if r == role]
            if not targets:
                continue
            sources = [(r, dev) for r, dev in self._readable(ext) if r != role]
            if not sources:
                raise self._lost(ext)
            data = self._pread(sources[0][0], sources[0][1], ext.length)
            self.write_blocks([(role, dev, data) for dev in targets])


def _far_start(geometry: Any) -> int | None:
    """Where a raid10 far layout's far copies begin on every member (None otherwise)."""
    if geometry.level != 10:
        return None
    p = geometry.raid10
    return raid10_stride(geometry) if p.far > 1 and not p.offset else None
