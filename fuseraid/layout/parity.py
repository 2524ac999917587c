"""raid4/5/6 placement: which role holds data chunk k, P and Q in each row, and Q's
generator exponents, following md's raid5.c (raid5_compute_sector for placement,
raid6_d0 / raid6_idx_to_slot for the order Q is computed in)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fuseraid.errors import GeometryError
from fuseraid.layout.base import Extent, Layout, merge_extents
from fuseraid.layout.geometry import Geometry

# md algorithm numbers (raid5.h)
LEFT_ASYMMETRIC, RIGHT_ASYMMETRIC, LEFT_SYMMETRIC, RIGHT_SYMMETRIC = 0, 1, 2, 3
PARITY_0, PARITY_N = 4, 5
ROTATING_ZERO_RESTART, ROTATING_N_RESTART, ROTATING_N_CONTINUE = 8, 9, 10
LEFT_ASYMMETRIC_6, RIGHT_ASYMMETRIC_6, LEFT_SYMMETRIC_6, RIGHT_SYMMETRIC_6 = 16, 17, 18, 19
PARITY_0_6 = 20

DDF_LAYOUTS = frozenset((ROTATING_ZERO_RESTART, ROTATING_N_RESTART, ROTATING_N_CONTINUE))
Q_LAST_LAYOUTS = frozenset(range(16, 21))  # raid5 layout over roles 0..n-2, Q on role n-1


@dataclass(frozen=True)
class RowMap:
    """One row: data_roles[k] holds array chunk k of the row; P on p_role; Q on q_role
    (None below raid6) computed as Q = sum_k g^q_slots[k] * D_k over q_width slots,
    the slots no data chunk uses being zero blocks."""

    data_roles: tuple[int, ...]
    p_role: int
    q_role: int | None
    q_slots: tuple[int, ...]
    q_width: int


@dataclass(frozen=True)
class Block:
    """What a member chunk holds: kind "data" (array chunk k of row, starting at
    array_offset for this byte), "p" or "q"."""

    kind: Literal["data", "p", "q"]
    row: int
    k: int | None
    array_offset: int | None


def _rotated(start: int, count: int, modulus: int) -> tuple[int, ...]:
    return tuple((start + i) % modulus for i in range(count))


def _ascending_except(n: int, skip: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in range(n) if d not in skip)


def _placement(
    level: int, layout: int, n: int, stripe: int
) -> tuple[int, int | None, tuple[int, ...]]:
    """(p_role, q_role, data_roles) for one stripe (row) number."""
    if level == 4:
        return n - 1, None, tuple(range(n - 1))
    if level == 5:
        nd = n - 1
        if layout in (LEFT_ASYMMETRIC, LEFT_SYMMETRIC):
            pd = nd - stripe % n
        elif layout in (RIGHT_ASYMMETRIC, RIGHT_SYMMETRIC):
            pd = stripe % n
        elif layout == PARITY_0:
            pd = 0
        else:
            pd = nd
        if layout in (LEFT_SYMMETRIC, RIGHT_SYMMETRIC):
            return pd, None, _rotated(pd + 1, nd, n)
        return pd, None, _ascending_except(n, (pd,))
    nd = n - 2
    if layout in Q_LAST_LAYOUTS:
        # raid5's algorithm over the first n-1 roles, Q fixed on the last
        pd, _, data = _placement(5, layout - 16, n - 1, stripe)
        return pd, n - 1, data
    if layout == PARITY_0:
        return 0, 1, tuple(range(2, n))
    if layout == PARITY_N:
        return nd, nd + 1, tuple(range(nd))
    if layout in (LEFT_ASYMMETRIC, LEFT_SYMMETRIC, ROTATING_N_CONTINUE):
        pd = n - 1 - stripe % n
    elif layout == ROTATING_N_RESTART:
        pd = n - 1 - (stripe + 1) % n  # left-asymmetric starting one row later
    else:  # RIGHT_ASYMMETRIC, RIGHT_SYMMETRIC, ROTATING_ZERO_RESTART
        pd = stripe % n
    if layout == ROTATING_N_CONTINUE:
        qd = (pd + n - 1) % n  # Q just before P
        return pd, qd, _rotated(pd + 1, nd, n)
    qd = (pd + 1) % n
    if layout in (LEFT_SYMMETRIC, RIGHT_SYMMETRIC):
        return pd, qd, _rotated(pd + 2, nd, n)
    return pd, qd, _ascending_except(n, (pd, qd))


def _q_order(layout: int, n: int, qd: int, data: tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    """(q_slots, q_width). md walks the roles from raid6_d0 (role 0 for DDF, else the
    role after Q); non-DDF numbers only data roles, DDF numbers every role so P and Q
    leave zero gaps."""
    if layout in DDF_LAYOUTS:
        return tuple(data), n
    start = 0 if qd == n - 1 else qd + 1
    walk = [r for r in _rotated(start, n, n) if r in data]
    return tuple(walk.index(r) for r in data), len(data)


class ParityLayout(Layout):
    """Row-based placement for raid4/5/6. Row r is the chunk band at member offset
    r*chunk on every role and carries array bytes [r*stripe_size, (r+1)*stripe_size)."""

    def __init__(self, geometry: Geometry) -> None:
        if geometry.level not in (4, 5, 6):
            raise GeometryError(f"raid{geometry.level} is not a parity level")
        super().__init__(geometry)
        g = geometry
        self.chunk = g.chunk
        self.data_disks = g.data_disks
        self.stripe_size = g.data_disks * g.chunk
        self.rows_used = g.dev_used // g.chunk
        if g.level == 4:
            self.period = 1
        elif g.level == 6 and g.layout in Q_LAST_LAYOUTS:
            self.period = g.raid_disks - 1
        else:
            self.period = g.raid_disks
        self._rows = tuple(self._build_row(s) for s in range(self.period))
        # per row phase: role -> ("data", k) / ("p", None) / ("q", None)
        self._roles = tuple(self._role_table(m) for m in self._rows)

    def _build_row(self, stripe: int) -> RowMap:
        g = self.geometry
        pd, qd, data = _placement(g.level, g.layout, g.raid_disks, stripe)
        if qd is None:
            return RowMap(data, pd, None, (), 0)
        slots, width = _q_order(g.layout, g.raid_disks, qd, data)
        return RowMap(data, pd, qd, slots, width)

    @staticmethod
    def _role_table(m: RowMap) -> dict[int, tuple[Literal["data", "p", "q"], int | None]]:
        t: dict[int, tuple[Literal["data", "p", "q"], int | None]] = {
            r: ("data", k) for k, r in enumerate(m.data_roles)
        }
        t[m.p_role] = ("p", None)
        if m.q_role is not None:
            t[m.q_role] = ("q", None)
        return t

    def row(self, r: int) -> RowMap:
        if r < 0:
            raise GeometryError(f"negative row {r}")
        return self._rows[r % self.period]

    def address(self, offset: int) -> tuple[int, int, int]:
        """Array offset -> (row, k, offset within the chunk)."""
        row, rest = divmod(offset, self.stripe_size)
        k, intra = divmod(rest, self.chunk)
        return row, k, intra

    def array_offset(self, row: int, k: int, intra: int = 0) -> int:
        """(row, k, offset within chunk) -> array offset (inverse of address)."""
        return row * self.stripe_size + k * self.chunk + intra

    def map(self, offset: int, length: int) -> list[Extent]:
        """Data bytes only (one copy each); parity is the driver's business."""
        self.check_range(offset, length)
        out = []
        end = offset + length
        while offset < end:
            row, k, intra = self.address(offset)
            n = min(self.chunk - intra, end - offset)
            role = self._rows[row % self.period].data_roles[k]
            out.append(Extent(offset, n, ((role, row * self.chunk + intra),)))
            offset += n
        return merge_extents(out)

    def block_at(self, role: int, dev_offset: int) -> Block | None:
        """What the byte at dev_offset on role holds; None beyond the used rows."""
        if not 0 <= role < self.geometry.raid_disks:
            raise GeometryError(f"role {role} outside array of {self.geometry.raid_disks} disks")
        row, intra = divmod(dev_offset, self.chunk)
        if dev_offset < 0 or row >= self.rows_used:
            return None
        kind, k = self._roles[row % self.period][role]
        if k is None:
            return Block(kind, row, None, None)
        return Block(kind, row, k, self.array_offset(row, k, intra))

    def locate(self, role: int, dev_offset: int) -> int | None:
        b = self.block_at(role, dev_offset)
        return None if b is None else b.array_offset
