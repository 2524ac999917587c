"""The reshape state in md's own superblock fields: start (target geometry, new offset,
direction), progress (reshape_position), finish (a plain md array of the new geometry),
and reading it back. Mutators for SuperblockSet.commit(); pure otherwise."""

from __future__ import annotations

from collections.abc import Callable, Collection

from fuseraid.errors import SuperblockError
from fuseraid.layout.geometry import Geometry
from fuseraid.migration.plan import BACKWARD, FORWARD, Plan
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_MAX,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_NEW_OFFSET,
    MD_FEATURE_RAID0_LAYOUT,
    MD_FEATURE_RECOVERY_OFFSET,
    MD_FEATURE_RESHAPE_ACTIVE,
    MD_FEATURE_RESHAPE_BACKWARDS,
    SECTOR,
    Superblock,
)

Mutator = Callable[[Superblock], Superblock | None]
_RESHAPE_BITS = MD_FEATURE_RESHAPE_ACTIVE | MD_FEATURE_RESHAPE_BACKWARDS | MD_FEATURE_NEW_OFFSET


def _sectors(n: int, what: str) -> int:
    if n % SECTOR:
        raise SuperblockError(f"{what} {n} is not a whole number of sectors")
    return n // SECTOR


def _mark_failed(sb: Superblock, failed_devs: Collection[int]) -> None:
    for d in failed_devs:
        if d < len(sb.dev_roles):
            sb.dev_roles[d] = MD_DISK_ROLE_FAULTY


def start(plan: Plan, failed_devs: Collection[int] = ()) -> Mutator:
    """Record the target geometry and the starting border, as md's raid5_start_reshape
    and mdadm write them: raid_disks is the new count, delta_disks the change, level/
    layout/chunk the old values with new_level/new_layout/new_chunk beside them."""
    old, new = plan.old, plan.new
    border = 0 if plan.direction == FORWARD else plan.end
    delta = _sectors(plan.delta, "data offset change")

    def mutate(sb: Superblock) -> None:
        sb.feature_map &= ~(_RESHAPE_BITS | MD_FEATURE_RAID0_LAYOUT)
        sb.feature_map |= MD_FEATURE_RESHAPE_ACTIVE
        if plan.direction == BACKWARD:
            sb.feature_map |= MD_FEATURE_RESHAPE_BACKWARDS
        if delta:
            sb.feature_map |= MD_FEATURE_NEW_OFFSET
        if old.level == 0 and old.layout:
            sb.feature_map |= MD_FEATURE_RAID0_LAYOUT
        sb.level, sb.layout = old.level, old.layout
        sb.chunksize = old.chunk // SECTOR
        sb.size = old.dev_size // SECTOR
        sb.raid_disks = new.raid_disks
        sb.delta_disks = new.raid_disks - old.raid_disks
        sb.new_level, sb.new_layout = new.level, new.layout
        sb.new_chunk = new.chunk // SECTOR
        sb.new_offset = delta
        sb.reshape_position = border // SECTOR
        if plan.near_only:
            sb.resync_offset = 0  # the new far copies are stale until the resync after
        _mark_failed(sb, failed_devs)

    return mutate


def progress(border: int, failed_devs: Collection[int] = ()) -> Mutator:
    """Move the durable border (reshape_position, array sectors)."""
    pos = _sectors(border, "reshape position")

    def mutate(sb: Superblock) -> None:
        sb.reshape_position = pos
        _mark_failed(sb, failed_devs)

    return mutate


def finish(plan: Plan, failed_devs: Collection[int] = ()) -> Mutator:
    """A plain md array of the new geometry: data at the new offset, no reshape bits,
    roles beyond the new raid_disks become spares, recovery marks cleared (the pass
    wrote every role of the new geometry)."""
    new = plan.new
    delta = _sectors(plan.delta, "data offset change")

    def mutate(sb: Superblock) -> None:
        sb.feature_map &= ~(_RESHAPE_BITS | MD_FEATURE_RAID0_LAYOUT | MD_FEATURE_RECOVERY_OFFSET)
        if new.level == 0 and new.layout:
            sb.feature_map |= MD_FEATURE_RAID0_LAYOUT
        sb.level, sb.layout = new.level, new.layout
        sb.chunksize = new.chunk // SECTOR
        sb.size = new.dev_size // SECTOR if new.level != 0 else 0
        sb.raid_disks = new.raid_disks
        sb.delta_disks = 0
        sb.new_level, sb.new_layout, sb.new_chunk = new.level, new.layout, sb.chunksize
        sb.new_offset = 0
        sb.reshape_position = 0
        sb.recovery_offset = 0
        if plan.near_only:
            sb.resync_offset = 0  # md's fresh raid10: the resync makes the far copies
        sb.data_offset += delta
        sb.data_size -= delta
        if new.level == 0:  # md's raid0 uses each member's whole data_size (size is 0)
            sb.data_size = new.dev_size // SECTOR
        sb.dev_roles = [
            MD_DISK_ROLE_SPARE if new.raid_disks <= r < MD_DISK_ROLE_MAX else r
            for r in sb.dev_roles
        ]
        _mark_failed(sb, failed_devs)

    return mutate


def instant(plan: Plan, failed_devs: Collection[int] = ()) -> Mutator:
    """An instant level change: the new geometry in place, nothing in flight."""
    return finish(plan, failed_devs)


def geometry_of(sb: Superblock) -> Geometry:
    """The geometry of a superblock with no reshape in flight."""
    chunk = sb.chunksize * SECTOR
    dev = sb.size * SECTOR or sb.data_size * SECTOR
    if sb.level == 0:
        dev = dev // chunk * chunk
    return Geometry(sb.level, sb.raid_disks, sb.layout, chunk, dev)


def geometries(sb: Superblock) -> tuple[Geometry, Geometry]:
    """(old, new) geometry of a superblock whose RESHAPE_ACTIVE bit is set."""
    if not sb.reshape_active:
        raise SuperblockError("no reshape in progress")
    old_disks = sb.raid_disks - sb.delta_disks
    # mdadm leaves size 0 on raid0; its members then use their whole data area
    dev = sb.size * SECTOR or sb.data_size * SECTOR
    old = Geometry(sb.level, old_disks, sb.layout, sb.chunksize * SECTOR, dev)
    chunk = sb.new_chunk * SECTOR if sb.new_level != 1 else 0
    new_dev = dev // chunk * chunk if chunk else dev
    new = Geometry(sb.new_level, sb.raid_disks, sb.new_layout, chunk, new_dev)
    return old, new


def border_of(sb: Superblock) -> int:
    return sb.reshape_position * SECTOR


def direction_of(sb: Superblock) -> str:
    return BACKWARD if sb.feature_map & MD_FEATURE_RESHAPE_BACKWARDS else FORWARD
