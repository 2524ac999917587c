"""The volume an array serves while one role is being rebuilt onto a new member.

Two drivers over the same geometry: `degraded` treats the rebuilding role as missing,
`full` includes its new member. Rows below the border are rebuilt, rows at or above it
are not yet. Reads always go through `degraded` (correct everywhere). Writes to rebuilt
rows go through `full`, so the new member stays current there. Writes above the border go
through `degraded` for the parity levels, because a parity update could otherwise read
the new member's not-yet-rebuilt garbage as old data; the rebuild recomputes those rows
later. Mirror levels never read during a write, so `full` is safe for them everywhere.
"""

from __future__ import annotations

from typing import Any

PARITY_LEVELS = (4, 5, 6)


class RecoveringVolume:
    """Volume interface (size, read, write, lock_span, flush) during a rebuild."""

    def __init__(self, degraded: Any, full: Any, role: int, border_row: int) -> None:
        self.degraded = degraded
        self.full = full
        self.role = role
        self.border_row = border_row  # rows [0, border_row) of `role` are rebuilt
        self.size: int = degraded.size
        self.rows: int = degraded.rows
        self.row_bytes: int = degraded.row_bytes
        self._split = degraded.geometry.level in PARITY_LEVELS

    def lock_span(self, off: int, n: int) -> tuple[int, int]:
        return self.degraded.lock_span(off, n)

    def read(self, off: int, n: int) -> bytes:
        return self.degraded.read(off, n)

    def write(self, off: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        if not self._split:
            self.full.write(off, view)
            return
        border = min(self.border_row * self.row_bytes, self.size)
        cut = min(max(border - off, 0), len(view))
        if cut:
            self.full.write(off, view[:cut])
        if cut < len(view):
            self.degraded.write(off + cut, view[cut:])

    def flush(self) -> None:
        self.full.flush()

    def rebuild(self, start_row: int, end_row: int) -> None:
        """Rebuild rows [start_row, end_row) of the role (the caller holds their lock)."""
        self.full.rebuild(self.role, start_row, end_row)
