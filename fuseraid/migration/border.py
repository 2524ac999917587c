"""Border: the Volume of an array in the middle of a reshape. Array bytes on the new side
of the border are served by the new-geometry driver, the others by the old one. The
migrator moves the border (after the window in flight is durable and checkpointed);
writes touching the window wait on the array's range lock, which the migrator holds
(reads of it too when it is backed up; see docs/reshape.md)."""

from __future__ import annotations

from typing import Any

from fuseraid.errors import FuseraidError
from fuseraid.migration.plan import FORWARD


class Border:
    """Volume interface (size, read, write, lock_span, flush) over two drivers.

    direction FORWARD: [0, border) is new, [border, size) old; BACKWARD: [border, size)
    is new, [0, border) old. `size` is what the array exposes during the reshape (the
    old size when growing, the cut size when shrinking)."""

    def __init__(
        self, old: Any, new: Any, border: int, direction: str, size: int
    ) -> None:
        if size > old.size or size > new.size:
            raise FuseraidError(
                f"reshape: exposed size {size} exceeds a geometry ({old.size}, {new.size})")
        self.old = old
        self.new = new
        self.direction = direction
        self.size = size
        self.border = border

    # ---- the border ----------------------------------------------------------------
    def new_side(self, off: int) -> bool:
        """Is array byte off in the new layout?"""
        if self.direction == FORWARD:
            return off < self.border
        return off >= self.border

    def pieces(self, off: int, n: int) -> list[tuple[Any, int, int]]:
        """(driver, offset, length) for the parts of [off, off+n) on each side, all
        judged by ONE reading of the border: the migrator may move it while a request
        runs (a window under a shared lock), and a side judged by a later reading would
        send bytes below the first split to the wrong driver."""
        b = self.border
        end = off + n
        fwd = self.direction == FORWARD
        below, above = (self.new, self.old) if fwd else (self.old, self.new)
        if off < b < end:
            return [(below, off, b - off), (above, b, end - b)]
        if n:
            return [(below if off < b else above, off, n)]
        return []

    # ---- volume interface -------------------------------------------------------------
    def _check(self, off: int, n: int) -> None:
        if off < 0 or n < 0 or off + n > self.size:
            raise FuseraidError(
                f"reshape: request [{off}, {off + n}) outside array of {self.size} bytes")

    def read(self, off: int, n: int) -> bytes:
        self._check(off, n)
        parts = [drv.read(o, k) for drv, o, k in self.pieces(off, n)]
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def write(self, off: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        self._check(off, len(view))
        for drv, o, k in self.pieces(off, len(view)):
            drv.write(o, view[o - off : o - off + k])

    def read_now(self, off: int, n: int) -> bytes | None:
        """The engine's small-read fast path (Driver.read_now) when [off, off+n) lies on
        one side of the border, judged by one reading of it, as pieces() does. It runs
        with no checkpoint on the trio thread, so it is a reader that the window's lock
        let through: under a shared window lock it reads the old layout, which the
        safety rule keeps intact until the barrier after the window."""
        parts = self.pieces(off, n)
        if len(parts) != 1:
            return None
        drv, o, k = parts[0]
        return drv.read_now(o, k)

    def lock_span(self, off: int, n: int) -> tuple[int, int]:
        """The union of both geometries' spans: the border may move while a request waits
        for its lock, so it must hold what it touches on either side of it."""
        self._check(off, n)
        if n == 0:
            return off, off
        a = self.old.lock_span(off, n)
        b = self.new.lock_span(off, n)
        return min(a[0], b[0]), max(a[1], b[1])

    def flush(self) -> None:
        # both drivers share the members; the second fsync finds nothing dirty, and each
        # driver hands a failing member to the engine's policy
        self.old.flush()
        self.new.flush()

    def missing(self) -> list[int]:
        return sorted(set(self.old.missing()) | set(self.new.missing()))


# ---- the migrator's window I/O ---------------------------------------------------------
# A window is megabytes of whole rows: the drivers' read_into and write_rows do what read
# and write do for it, but into/from the migrator's reused buffers (no fresh multi-MiB
# allocation, page faults and copies per window, which held the GIL and starved
# foreground requests), one preadv / pwritev per member.


class RowWriter:
    """The migrator's window writes: whole rows of a parity level go through the driver's
    write_rows with P/Q buffers kept here from window to window; anything else (other
    levels, rows cut by the exposed size) through its plain write."""

    def __init__(self) -> None:
        self._scratch = [bytearray(), bytearray()]

    def write(self, drv: Any, off: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        rb = getattr(drv, "row_bytes", 0)
        if not hasattr(drv, "write_rows") or off % rb or len(view) % rb:
            drv.write(off, view)
            return
        drv.write_rows(off, view, self._scratch)
