"""raid4, raid5 and raid6: md's raid5 personality (one driver, the layout decides where P
and Q live).

Everything works per row (one chunk on every member, see fuseraid/layout) and, inside a
row, per *column range*: parity byte t of a row depends only on byte t of each data
chunk, so a request touches only the columns it needs (a 4 KiB write reads and writes
4 KiB per involved member). Writes choose per column range the cheaper of
read-modify-write and reconstruct-write; degraded rows fall back to "read what is
left, solve for the missing blocks, recompute".
"""

from __future__ import annotations

from typing import Any

from fuseraid.errors import FuseraidError
from fuseraid.parity import gen_pq, rec_data_data, rec_data_q, xor_into

from .base import PAGE, PAGE_SECTORS, Driver, OnMemberError, Slot

Buf = Any  # bytes, bytearray or memoryview of one column range

# scrub/rebuild read at most this many member bytes per batch (all roles together)
MAINT_BATCH = 8 << 20


class Raid456Driver(Driver):
    """md raid4/5/6 over a ParityLayout."""

    def __init__(
        self,
        geometry: Any,
        slots: list[Slot | None],
        on_member_error: OnMemberError | None = None,
    ) -> None:
        super().__init__(geometry, slots, on_member_error)
        self.chunk: int = geometry.chunk
        self.data_disks: int = geometry.data_disks
        self.max_missing = 2 if geometry.level == 6 else 1
        self.row_bytes = self.data_disks * self.chunk
        self.rows = geometry.dev_size // self.chunk
        self.size = self.rows * self.row_bytes

    def lock_span(self, off: int, n: int) -> tuple[int, int]:
        """Whole rows: a partial write and a degraded read of one row must not interleave."""
        if n <= 0:
            return off, off
        rb = self.row_bytes
        return off // rb * rb, -(-(off + n) // rb) * rb

    # ---- helpers ---------------------------------------------------------------------
    def _have(self, role: int | None) -> bool:
        return role is not None and self.slots[role] is not None

    def _qsrcs(self, rm: Any, data: list[Buf | None]) -> list[Buf | None]:
        srcs: list[Buf | None] = [None] * rm.q_width
        for k, d in enumerate(data):
            srcs[rm.q_slots[k]] = d
        return srcs

    def _parity(self, rm: Any, data: list[Buf], length: int, want_p: bool, want_q: bool):
        """P and/or Q of full data for one column range (None where not wanted)."""
        p = bytearray(length) if want_p else None
        q = bytearray(length) if want_q and rm.q_role is not None else None
        if q is not None:
            gen_pq(self._qsrcs(rm, data), p, q)
        elif p is not None:
            xor_into(p, data)
        return p, q

    def _solve(self, rm: Any, blocks: dict[int, Buf], length: int) -> list[Buf]:
        """Every data block of a column range from the blocks we have (role -> bytes)."""
        data: list[Buf | None] = [blocks.get(role) for role in rm.data_roles]
        lost = [k for k, d in enumerate(data) if d is None]
        if not lost:
            return data  # type: ignore[return-value]
        p = blocks.get(rm.p_role)
        q = blocks.get(rm.q_role) if rm.q_role is not None else None
        if len(lost) == 1 and p is not None:
            out = bytearray(length)
            xor_into(out, [p] + [d for d in data if d is not None])
            data[lost[0]] = out
        elif len(lost) == 1 and q is not None:
            out = bytearray(length)
            rec_data_q(self._qsrcs(rm, data), q, rm.q_slots[lost[0]], out)
            data[lost[0]] = out
        elif len(lost) == 2 and p is not None and q is not None:
            x, y = lost
            out_x, out_y = bytearray(length), bytearray(length)
            rec_data_data(
                self._qsrcs(rm, data), p, q, rm.q_slots[x], rm.q_slots[y], out_x, out_y
            )
            data[x], data[y] = out_x, out_y
        else:
            raise self.too_degraded("reconstruction")
        return data  # type: ignore[return-value]

    def _read_blocks(self, roles: list[int], dev: int, length: int) -> dict[int, Buf]:
        return {role: self._pread(role, dev, length) for role in roles}

    def _parity_roles(self, rm: Any) -> list[int]:
        return [rm.p_role] + ([rm.q_role] if rm.q_role is not None else [])

    # ---- read ------------------------------------------------------------------------
    def read_now(self, off: int, n: int) -> bytes | None:
        """A read inside one data chunk whose role is live: ParityLayout.map in integers
        (a complete chunk is read as it is, as _read_row does; parity is never needed)."""
        c = self.chunk
        r, s = divmod(off, self.row_bytes)
        k, intra = divmod(s, c)
        if n <= 0 or off < 0 or intra + n > c or r >= self.rows:
            return None
        return self._member_now(self.layout.row(r).data_roles[k], r * c + intra, n)

    def _read_into(self, off: int, view: memoryview) -> None:
        rb = self.row_bytes
        reads: list[tuple[int, int, Buf]] = []  # healthy chunks, gathered at the end
        pos, end = off, off + len(view)
        while pos < end:
            r, s = divmod(pos, rb)
            e = min(end - r * rb, rb)
            self._read_row(r, s, e, view[pos - off : pos - off + e - s], reads)
            pos += e - s
        self._gather(reads)

    def _read_row(
        self, r: int, s: int, e: int, dst: memoryview, reads: list[tuple[int, int, Buf]]
    ) -> None:
        """Array bytes [s, e) of row r (offsets inside the row) into dst; chunks that
        need no reconstruction are queued on `reads` instead."""
        c = self.chunk
        rm = self.layout.row(r)
        segs = []  # (k, column start, column end)
        for k in range(s // c, (e - 1) // c + 1):
            segs.append((k, max(s, k * c) - k * c, min(e, (k + 1) * c) - k * c))
        if all(self._have(rm.data_roles[k]) for k, _, _ in segs):
            for k, a, b in segs:
                reads.append((rm.data_roles[k], r * c + a, dst[k * c + a - s : k * c + b - s]))
            return
        # degraded: one pread per surviving member over the union of touched columns
        lo = min(a for _, a, _ in segs)
        hi = max(b for _, _, b in segs)
        lost = [k for k in range(self.data_disks) if not self._have(rm.data_roles[k])]
        roles = [role for role in rm.data_roles if self._have(role)]
        if len(lost) == 1 and self._have(rm.p_role):
            roles.append(rm.p_role)  # P alone suffices; skip reading Q
        else:
            roles += [role for role in self._parity_roles(rm) if self._have(role)]
        data = self._solve(rm, self._read_blocks(roles, r * c + lo, hi - lo), hi - lo)
        for k, a, b in segs:
            dst[k * c + a - s : k * c + b - s] = memoryview(data[k])[a - lo : b - lo]

    # ---- write -----------------------------------------------------------------------
    def _write(self, off: int, data: memoryview) -> None:
        if len(self.missing()) > self.max_missing:
            raise self.too_degraded("writing")
        rb = self.row_bytes
        # rows are disjoint on the members, so every row's new blocks are computed first
        # and written together: a sequential write becomes one pwritev per member
        writes: list[tuple[int, int, Buf]] = []
        pos, end = off, off + len(data)
        while pos < end:
            r, s = divmod(pos, rb)
            e = min(end - r * rb, rb)
            self._write_row(r, s, e, data[pos - off : pos - off + e - s], writes)
            pos += e - s
        self.write_blocks(writes)
        if len(self.missing()) > self.max_missing:
            raise self.too_degraded("the write just done")

    def write_rows(self, off: int, view: memoryview, scratch: list[bytearray]) -> None:
        """Write whole rows [off, off+len(view)) (row-aligned): each row's parity straight
        from `view`, chunk-sized blocks, into `scratch` ([P, Q] buffers the caller keeps
        from call to call and this grows), then one pwritev per member. Nothing is read:
        the migrator's window writes, which would otherwise allocate per window."""
        n = len(view)
        rb, c, k = self.row_bytes, self.chunk, self.data_disks
        if off % rb or n % rb:
            raise FuseraidError(f"raid{self.level}: write_rows [{off}, {off + n}) is not "
                                "whole rows")
        self._check_range(off, n)
        rows = n // rb
        q_needed = self.level == 6
        for i, need in ((0, True), (1, q_needed)):
            if need and len(scratch[i]) < rows * c:
                scratch[i] = bytearray(rows * c)
        pv, qv = memoryview(scratch[0]), memoryview(scratch[1])
        r0 = off // rb

        def put() -> None:
            if len(self.missing()) > self.max_missing:
                raise self.too_degraded("writing")
            have = self._have
            writes: list[tuple[int, int, Buf]] = []
            for i in range(rows):
                r = r0 + i
                rm = self.layout.row(r)
                base = i * rb
                blocks = [view[base + j * c : base + (j + 1) * c] for j in range(k)]
                p = pv[i * c : (i + 1) * c]
                writes += [(role, r * c, b) for role, b in zip(rm.data_roles, blocks,
                                                                strict=True) if have(role)]
                if rm.q_role is not None:
                    q = qv[i * c : (i + 1) * c]
                    gen_pq(self._qsrcs(rm, blocks), p, q)
                    if have(rm.q_role):
                        writes.append((rm.q_role, r * c, q))
                else:
                    xor_into(p, blocks)
                if have(rm.p_role):
                    writes.append((rm.p_role, r * c, p))
            self.write_blocks(writes)
            if len(self.missing()) > self.max_missing:
                raise self.too_degraded("the write just done")

        self._retrying(put)

    def _write_row(
        self, r: int, s: int, e: int, src: memoryview, writes: list[tuple[int, int, Buf]]
    ) -> None:
        """Write array bytes [s, e) of row r, one column range at a time."""
        c = self.chunk
        rm = self.layout.row(r)
        k0, k1 = s // c, (e - 1) // c
        a, b = s - k0 * c, e - k1 * c
        # each written chunk covers [a, c) (first), [0, c) (middle) or [0, b) (last);
        # between these break points the set of written chunks is constant
        cuts = sorted({0, a, b, c})
        for lo, hi in zip(cuts, cuts[1:], strict=False):
            new: dict[int, Buf] = {}
            for k in range(k0, k1 + 1):
                ka = a if k == k0 else 0
                kb = b if k == k1 else c
                if ka <= lo and hi <= kb:
                    new[k] = src[k * c + lo - s : k * c + hi - s]
            if new:
                writes += self._write_columns(r, rm, lo, hi, new)

    def _write_columns(
        self, r: int, rm: Any, lo: int, hi: int, new: dict[int, Buf]
    ) -> list[tuple[int, int, Buf]]:
        """New blocks (role, dev_off, bytes) for columns [lo, hi) of row r."""
        length = hi - lo
        dev = r * self.chunk + lo
        roles = rm.data_roles
        p_ok = self._have(rm.p_role)
        q_ok = self._have(rm.q_role)
        unwritten = [k for k in range(self.data_disks) if k not in new]

        # member reads each strategy needs; None = not possible in this state
        rcw = len(unwritten) if all(self._have(roles[k]) for k in unwritten) else None
        rmw = (
            len(new) + p_ok + q_ok
            if (p_ok or q_ok) and all(self._have(roles[k]) for k in new)
            else None
        )
        writes = [(roles[k], dev, buf) for k, buf in new.items() if self._have(roles[k])]

        if not (p_ok or q_ok):
            pass  # no parity left to keep: only the data goes down
        elif rmw is not None and (rcw is None or rmw < rcw):
            old = self._read_blocks([roles[k] for k in new], dev, length)
            if p_ok:
                p_old = self._pread(rm.p_role, dev, length)
                p_new = bytearray(length)
                xor_into(p_new, [p_old, *old.values(), *new.values()])
                writes.append((rm.p_role, dev, p_new))
            if q_ok:
                q_old = self._pread(rm.q_role, dev, length)
                deltas: list[Buf | None] = [None] * self.data_disks
                for k, buf in new.items():
                    d = bytearray(length)
                    xor_into(d, [old[roles[k]], buf])
                    deltas[k] = d
                q_delta = bytearray(length)
                gen_pq(self._qsrcs(rm, deltas), None, q_delta)
                q_new = bytearray(length)
                xor_into(q_new, [q_old, q_delta])
                writes.append((rm.q_role, dev, q_new))
        else:
            if rcw is not None:
                have = self._read_blocks([roles[k] for k in unwritten], dev, length)
                data = [new[k] if k in new else have[roles[k]] for k in range(self.data_disks)]
            else:
                # degraded beyond both shortcuts: solve the old row, then overlay
                present = [role for role in (*roles, *self._parity_roles(rm)) if self._have(role)]
                data = self._solve(rm, self._read_blocks(present, dev, length), length)
                for k, buf in new.items():
                    data[k] = buf
            p, q = self._parity(rm, data, length, p_ok, q_ok)
            if p is not None:
                writes.append((rm.p_role, dev, p))
            if q is not None:
                writes.append((rm.q_role, dev, q))
        return writes

    # ---- maintenance -----------------------------------------------------------------
    def _row_batches(self, start_row: int, end_row: int, skip: int | None = None):
        """Yield batches of (row, rowmap, {role: chunk bytes}) covering rows
        [start_row, end_row); a batch is bounded and read with one preadv per member."""
        c = self.chunk
        step = max(1, MAINT_BATCH // (c * self.geometry.raid_disks))
        for first in range(start_row, end_row, step):
            batch = []
            reads: list[tuple[int, int, Buf]] = []
            for r in range(first, min(first + step, end_row)):
                rm = self.layout.row(r)
                roles = [*rm.data_roles, *self._parity_roles(rm)]
                blocks = {role: bytearray(c) for role in roles if role != skip and self._have(role)}
                reads += [(role, r * c, buf) for role, buf in blocks.items()]
                batch.append((r, rm, blocks))
            self._gather(reads)
            yield batch

    def _scrub(self, start_row: int, end_row: int, repair: bool) -> int:
        """Compare P/Q with the data; returns md's mismatch_cnt unit: 8 sectors for every
        4 KiB column (md's stripe page) whose P or Q differs. repair rewrites them."""
        if len(self.missing()) >= self.max_missing:
            raise FuseraidError(
                f"raid{self.level}: no redundancy left to check (missing roles {self.missing()})"
            )
        count = 0
        for batch in self._row_batches(start_row, end_row):
            count += self._scrub_batch(batch, repair)
        return count

    def _scrub_batch(self, batch: list[tuple[int, Any, dict[int, Buf]]], repair: bool) -> int:
        c = self.chunk
        count = 0
        fixes: list[tuple[int, int, Buf]] = []
        for r, rm, blocks in batch:
            data = self._solve(rm, blocks, c)
            p, q = self._parity(rm, data, c, self._have(rm.p_role), self._have(rm.q_role))
            bad: set[int] = set()
            for role, want in ((rm.p_role, p), (rm.q_role, q)):
                if want is None or blocks[role] == want:
                    continue
                have_v, want_v = memoryview(blocks[role]), memoryview(want)
                for pg in range(0, c, PAGE):
                    if have_v[pg : pg + PAGE] != want_v[pg : pg + PAGE]:
                        bad.add(pg)
            count += PAGE_SECTORS * len(bad)
            if bad and repair:
                fixes += [
                    (role, r * c, want)
                    for role, want in ((rm.p_role, p), (rm.q_role, q))
                    if want is not None
                ]
        self.write_blocks(fixes)
        return count

    def _resync(self, start_row: int, end_row: int) -> None:
        """md's resync after an unclean shutdown: make parity agree with the data."""
        self._scrub(start_row, end_row, True)

    def _rebuild(self, role: int, start_row: int, end_row: int) -> None:
        """Recompute `role`'s chunk of each row from the others onto its (new) member."""
        c = self.chunk
        for batch in self._row_batches(start_row, end_row, skip=role):
            writes: list[tuple[int, int, Buf]] = []
            for r, rm, blocks in batch:
                data = self._solve(rm, blocks, c)
                if role in rm.data_roles:
                    out = data[rm.data_roles.index(role)]
                else:
                    p, q = self._parity(rm, data, c, role == rm.p_role, role == rm.q_role)
                    out = p if role == rm.p_role else q
                if out is not None:  # None: a role the row does not use (not in md layouts)
                    writes.append((role, r * c, out))
            self.write_blocks(writes)
