"""What the engine records in the superblocks: the mutators it hands to
`SuperblockSet.commit()` (state.py: data fsync first, then every live member's superblock,
then their fsyncs), and the conversion between the engine's row positions and md's
checkpoints, which count member data-area sectors (resync_offset, recovery_offset).

docs/engine.md "Durable order" tables which moment commits which of these.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fuseraid.layout import Geometry
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    MD_FEATURE_RECOVERY_OFFSET,
    SECTOR,
    Superblock,
)

Mutator = Callable[[Superblock], Any]


def set_role(sb: Superblock, dev_number: int, role: int) -> None:
    """dev_roles[dev_number] = role, growing dev_roles (unused slots read as faulty,
    as md's super_1_sync writes them)."""
    while len(sb.dev_roles) <= dev_number:
        sb.dev_roles.append(MD_DISK_ROLE_FAULTY)
    sb.max_dev = len(sb.dev_roles)
    sb.dev_roles[dev_number] = role


def faulty(dev_number: int) -> Mutator:
    """The member `dev_number` is faulty (failed, or removed from the array)."""
    return lambda sb: set_role(sb, dev_number, MD_DISK_ROLE_FAULTY)


def assign(dev_number: int, value: int, rebuild_uuid: bytes | None) -> Mutator:
    """dev_roles[dev_number] = value (a role, or MD_DISK_ROLE_SPARE); the member whose
    device uuid is `rebuild_uuid` (None: no member) starts a rebuild from its first row
    (md: the RECOVERY_OFFSET feature bit with recovery_offset 0)."""

    def record(s: Superblock) -> None:
        set_role(s, dev_number, value)
        if rebuild_uuid is not None and s.device_uuid == rebuild_uuid:
            s.feature_map |= MD_FEATURE_RECOVERY_OFFSET
            s.recovery_offset = 0

    return record


def recovery_checkpoint(uuid: bytes, sectors: int) -> Mutator:
    """The member `uuid` is rebuilt up to `sectors` of its data area."""

    def mark(s: Superblock) -> None:
        if s.device_uuid == uuid:
            s.recovery_offset = sectors

    return mark


def recovery_done(uuid: bytes) -> Mutator:
    """The member `uuid` is fully rebuilt: in sync like the others."""

    def finished(s: Superblock) -> None:
        if s.device_uuid == uuid:
            s.feature_map &= ~MD_FEATURE_RECOVERY_OFFSET
            s.recovery_offset = 0

    return finished


def active(sb: Superblock) -> None:
    """md's clean -> active: resync_offset 0 while writes may be in flight."""
    sb.resync_offset = 0


def clean(resync_offset: int, rebuilding: dict[bytes, int]) -> Mutator:
    """md's clean mark: the resync checkpoint (MaxSector when in sync) and, for every
    member still rebuilding (device uuid -> sectors), its recovery checkpoint."""

    def mark(sb: Superblock) -> None:
        sb.resync_offset = resync_offset
        if sb.device_uuid in rebuilding:
            sb.feature_map |= MD_FEATURE_RECOVERY_OFFSET
            sb.recovery_offset = rebuilding[sb.device_uuid]

    return mark


# ---- rows <-> md's checkpoint sectors ----
def dev_per_row(geometry: Geometry, driver: Any) -> int | None:
    """Member data-area bytes that rows [0, k) fill, per row; None when a prefix of rows
    is not a prefix of the member (raid10 far copies): checkpoint only at the end."""
    g = geometry
    if g.level in (4, 5, 6):
        return g.chunk
    if g.level == 1:
        return int(driver.row_bytes) if driver is not None else None
    if g.level == 10:
        p = g.raid10
        if p.far == 1 or p.offset:
            return g.chunk * p.copies
        return None
    return None


def sectors_from_rows(rows: int, per: int | None) -> int:
    """Checkpoint sectors of rows [0, rows); 0 (start over) where rows make no prefix."""
    return 0 if per is None else rows * per // SECTOR


def resync_offset(resync_row: int | None, per: int | None) -> int:
    """md's resync_offset for a resync pending from `resync_row` (None: in sync)."""
    if resync_row is None:
        return MAX_SECTOR
    return sectors_from_rows(resync_row, per)


def rows_from_sectors(sectors: int, per: int, rows: int) -> int:
    """Rows fully inside the first `sectors` of each member's data area (rounded down:
    resuming a little early is always safe), at most `rows`."""
    return min(sectors * SECTOR // per, rows)
