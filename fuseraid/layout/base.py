"""What every layout shares: extents, range checks, the stripe span for locking."""

from __future__ import annotations

from dataclasses import dataclass

from fuseraid.errors import GeometryError
from fuseraid.layout.geometry import Geometry


@dataclass(frozen=True)
class Extent:
    """Array bytes [array_offset, array_offset+length) and every copy of them:
    copies[i] = (role, dev_offset), contiguous on that member for length bytes;
    dev_offset is relative to the member's data offset."""

    array_offset: int
    length: int
    copies: tuple[tuple[int, int], ...]


class Layout:
    """Base: a geometry's mapping between array bytes and member bytes."""

    geometry: Geometry
    array_size: int
    stripe_size: int  # array bytes per full stripe (the unit lock_span rounds to)

    def __init__(self, geometry: Geometry) -> None:
        self.geometry = geometry
        self.array_size = geometry.array_size

    def check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.array_size:
            raise GeometryError(
                f"range {offset}+{length} outside the array (size {self.array_size})")

    def stripe_span(self, offset: int, length: int) -> tuple[int, int]:
        """[start, end) covering [offset, offset+length), widened to whole stripes and
        clipped to the array: the range a writer locks."""
        self.check_range(offset, length)
        s = self.stripe_size
        start = offset // s * s
        end = -(-(offset + length) // s) * s
        return start, min(end, self.array_size)

    def map(self, offset: int, length: int) -> list[Extent]:
        raise NotImplementedError

    def locate(self, role: int, dev_offset: int) -> int | None:
        """Array offset of the data byte at dev_offset on role, or None when that byte
        holds parity or lies outside the used area."""
        raise NotImplementedError


def merge_extents(extents: list[Extent]) -> list[Extent]:
    """Join neighbours whose every copy continues on the same member, so callers
    issue fewer, larger I/Os."""
    out: list[Extent] = []
    for e in extents:
        if out:
            p = out[-1]
            touching = p.array_offset + p.length == e.array_offset
            if touching and len(p.copies) == len(e.copies) and all(
                a[0] == b[0] and a[1] + p.length == b[1]
                for a, b in zip(p.copies, e.copies, strict=True)
            ):
                out[-1] = Extent(p.array_offset, p.length + e.length, p.copies)
                continue
        out.append(e)
    return out
