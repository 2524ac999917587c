"""Which sets of missing roles a geometry survives (md's `enough()` per level)."""

from __future__ import annotations

from collections.abc import Iterable

from fuseraid.layout import Geometry, make_layout


def survives(geometry: Geometry, missing: Iterable[int]) -> bool:
    """True when every array byte is still readable with these roles missing."""
    gone = set(missing)
    if not gone:
        return True
    level = geometry.level
    if level == 0:
        return False
    if level == 1:
        return len(gone) < geometry.raid_disks
    if level in (4, 5):
        return len(gone) <= 1
    if level == 6:
        return len(gone) <= 2
    # raid10: the copy placement repeats every raid_disks chunks (near, far and offset
    # rotate roles by whole chunks), so two periods of array chunks show every pattern.
    layout = make_layout(geometry)
    span = min(layout.array_size, geometry.chunk * geometry.raid_disks * 2 * geometry.copies)
    return all(
        any(role not in gone for role, _ in ext.copies) for ext in layout.map(0, span)
    )


def describe_missing(missing: Iterable[int]) -> str:
    roles = sorted(set(missing))
    return ", ".join(str(r) for r in roles) if roles else "none"
