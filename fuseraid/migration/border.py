"""Border: the Volume of an array in the middle of a reshape. Array bytes on the new side
of the border are served by the new-geometry driver, the others by the old one. The
migrator moves the border (after the window in flight is durable and checkpointed);
writes touching the window wait on the array's range lock, which the migrator holds
(reads of it too when it is backed up; see docs/reshape.md)."""

from __future__ import annotations

from typing import Any

from fuseraid.engine.levels.raid456 import Raid456Driver
from fuseraid.errors import FuseraidError
from fuseraid.migration.plan import FORWARD
from fuseraid.parity import gen_pq, xor_into


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
# A window is megabytes of whole rows: these do what drv.read/drv.write do for it, but
# into/from the migrator's reused buffers (no fresh multi-MiB allocation, page faults and
# copies per window, which held the GIL and starved foreground requests), one preadv /
# pwritev per member. Drivers other than raid4/5/6 take the plain path.


def read_into(drv: Any, off: int, view: memoryview) -> None:
    """view[:] = drv.read(off, len(view)), without the intermediate bytes."""
    n = len(view)
    if n == 0:
        return
    if not isinstance(drv, Raid456Driver):
        if hasattr(drv, "read_into"):  # raid0/1/10: straight into the view
            drv.read_into(off, view)
        else:
            view[:] = drv.read(off, n)
        return
    drv._check_range(off, n)
    rb = drv.row_bytes

    def fill() -> None:
        reads: list[tuple[int, int, Any]] = []
        pos, end = off, off + n
        while pos < end:
            r, s = divmod(pos, rb)
            e = min(end - r * rb, rb)
            drv._read_row(r, s, e, view[pos - off : pos - off + e - s], reads)
            pos += e - s
        drv._gather(reads)

    drv._retrying(fill)


class RowWriter:
    """Writes whole rows of a raid4/5/6 driver: parity of each row straight from the
    window buffer (C kernel, chunk-sized blocks) into reused P/Q buffers, then one
    pwritev per member for the whole window. Nothing is read back."""

    def __init__(self) -> None:
        self._p = bytearray()
        self._q = bytearray()

    def write(self, drv: Any, off: int, data: Any) -> None:
        view = memoryview(data).cast("B")
        n = len(view)
        if not isinstance(drv, Raid456Driver) or off % drv.row_bytes or n % drv.row_bytes:
            drv.write(off, view)
            return
        drv._check_range(off, n)
        c, rb, k = drv.chunk, drv.row_bytes, drv.data_disks
        rows = n // rb
        if len(self._p) < rows * c:
            self._p = bytearray(rows * c)
            self._q = bytearray(rows * c) if drv.level == 6 else bytearray()
        elif drv.level == 6 and len(self._q) < rows * c:
            self._q = bytearray(rows * c)
        pv, qv = memoryview(self._p), memoryview(self._q)
        r0 = off // rb

        def put() -> None:
            if len(drv.missing()) > drv.max_missing:
                raise drv.too_degraded("writing")
            have = drv._have
            writes: list[tuple[int, int, Any]] = []
            for i in range(rows):
                r = r0 + i
                rm = drv.layout.row(r)
                base = i * rb
                blocks = [view[base + j * c : base + (j + 1) * c] for j in range(k)]
                p = pv[i * c : (i + 1) * c]
                writes += [(role, r * c, b) for role, b in zip(rm.data_roles, blocks,
                                                                strict=True) if have(role)]
                if rm.q_role is not None:
                    q = qv[i * c : (i + 1) * c]
                    gen_pq(drv._qsrcs(rm, blocks), p, q)
                    if have(rm.q_role):
                        writes.append((rm.q_role, r * c, q))
                else:
                    xor_into(p, blocks)
                if have(rm.p_role):
                    writes.append((rm.p_role, r * c, p))
            drv.write_blocks(writes)
            if len(drv.missing()) > drv.max_missing:
                raise drv.too_degraded("the write just done")

        drv._retrying(put)
