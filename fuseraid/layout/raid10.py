"""raid10: near, far and offset copies, with far sets (raid10.c setup_geo,
calc_sectors, __raid10_find_phys, raid10_find_virt)."""

from __future__ import annotations

from math import gcd

from fuseraid.errors import GeometryError
from fuseraid.layout.base import Extent, Layout, merge_extents
from fuseraid.layout.geometry import (
    Geometry,
    raid10_dev_chunks,
    raid10_far_disk,
    raid10_stride,
)


class Raid10Layout(Layout):
    def __init__(self, geometry: Geometry) -> None:
        if geometry.level != 10:
            raise GeometryError(f"raid{geometry.level} is not raid10")
        super().__init__(geometry)
        g = geometry
        p = g.raid10
        self.chunk = g.chunk
        self.near, self.far, self.offset = p.near, p.far, p.offset
        self.disks = g.raid_disks
        self.params = p
        self.stride_chunks = raid10_stride(g) // g.chunk
        self.dev_chunks = raid10_dev_chunks(g)
        self.array_chunks = self.array_size // g.chunk
        # the member pattern of near copies repeats every lcm(disks, near)/near chunks
        self.stripe_size = g.raid_disks // gcd(g.raid_disks, p.near) * g.chunk

    def phys(self, array_chunk: int) -> tuple[tuple[int, int], ...]:
        """Every (role, member chunk) holding array chunk, in md's copy order."""
        p = self.params
        stripe, dev = divmod(array_chunk * self.near, self.disks)
        if self.offset:
            stripe *= self.far
        out = []
        for _ in range(self.near):
            d, s = dev, stripe
            out.append((d, s))
            for _ in range(1, self.far):
                d = raid10_far_disk(p, self.disks, d)
                s += self.stride_chunks
                out.append((d, s))
            dev += 1
            if dev >= self.disks:  # md moves on by one chunk, even for offset layouts
                dev = 0
                stripe += 1
        return tuple(out)

    def map(self, offset: int, length: int) -> list[Extent]:
        self.check_range(offset, length)
        c = self.chunk
        out = []
        end = offset + length
        while offset < end:
            ch, intra = divmod(offset, c)
            n = min(c - intra, end - offset)
            copies = tuple((r, s * c + intra) for r, s in self.phys(ch))
            out.append(Extent(offset, n, copies))
            offset += n
        return merge_extents(out)

    def virt_chunk(self, role: int, dev_chunk: int) -> int | None:
        """The array chunk whose copy sits at member chunk dev_chunk of role, or None
        for an unused slot. Like raid10_find_virt, but by searching the few chunks
        whose near copies start in the candidate rows and checking phys, so it
        agrees with phys even for far-set layouts where md's find_virt does not."""
        if not 0 <= role < self.disks:
            raise GeometryError(f"role {role} outside raid10 of {self.disks} disks")
        if dev_chunk < 0 or dev_chunk >= self.dev_chunks:
            return None
        rows = set()
        for f in range(self.far):
            if self.offset:
                base = dev_chunk - f  # row*far + f, near copies may spill one row
                if base >= 0 and base % self.far == 0:
                    rows.add(base // self.far)
                rows.add(dev_chunk // self.far)
            else:
                base = dev_chunk - f * self.stride_chunks
                if base >= 0:
                    rows.add(base)
        for row in sorted(rows):
            for r in (row - 1, row):  # a chunk's near copies may start one row earlier
                if r < 0:
                    continue
                first = r * self.disks // self.near
                last = ((r + 1) * self.disks - 1) // self.near
                for v in range(first, min(last, self.array_chunks - 1) + 1):
                    if (role, dev_chunk) in self.phys(v):
                        return v
        return None

    def locate(self, role: int, dev_offset: int) -> int | None:
        ch, intra = divmod(dev_offset, self.chunk)
        v = self.virt_chunk(role, ch)
        return None if v is None else v * self.chunk + intra
