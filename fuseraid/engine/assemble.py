"""Assembly: member paths -> an `Array`, with md's rules for who belongs, who is fresh
and how many roles may be missing. Every check runs before anything is opened for
writing, so a refused assembly writes nothing."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from fuseraid.engine.array import Array, MemberState
from fuseraid.engine.state import Entry, SuperblockSet
from fuseraid.engine.tolerance import describe_missing, survives
from fuseraid.errors import AssemblyError, FuseraidError, GeometryError
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_MAX,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_RECOVERY_OFFSET,
    MD_FEATURE_RESHAPE_ACTIVE,
    Superblock,
    format_uuid,
    read_superblock,
)

# md accepts a member whose events are one behind the newest (super_1_validate: a
# clean/active flip may not have reached every member when it stopped).
EVENTS_SLACK = 1


@dataclass
class Found:
    """A member path with its superblock and the role the newest superblock gives it."""

    path: str
    sb: Superblock
    role: int = MD_DISK_ROLE_SPARE


def read_members(paths: Sequence[str]) -> list[Found]:
    """Read and cross-check every superblock; raise AssemblyError/SuperblockError (one
    line) for anything md would refuse. Opens read-only; writes nothing."""
    if not paths:
        raise AssemblyError("no members given")
    seen: dict[tuple[int, int], str] = {}
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            raise AssemblyError(f"{p}: {e.strerror}") from e
        key = (st.st_rdev, 0) if st.st_rdev else (st.st_dev, st.st_ino)
        if key in seen:
            raise AssemblyError(f"{p} is given twice (same member as {seen[key]})")
        seen[key] = p
    found = [Found(p, read_superblock(p)) for p in paths]

    uuids = Counter(f.sb.set_uuid for f in found)
    best = max(uuids.values())
    home = next(f.sb.set_uuid for f in found if uuids[f.sb.set_uuid] == best)
    ref = next(f for f in found if f.sb.set_uuid == home)
    strangers = [f for f in found if f.sb.set_uuid != home]
    if strangers:
        f = strangers[0]
        raise AssemblyError(
            f"{f.path} belongs to another array (uuid {format_uuid(f.sb.set_uuid)}), not "
            f"to {format_uuid(home)} like {ref.path}")

    by_dev: dict[bytes, Found] = {}
    for f in found:
        other = by_dev.get(f.sb.device_uuid)
        if other is not None:
            raise AssemblyError(f"{f.path} and {other.path} are the same member (device uuid "
                                f"{format_uuid(f.sb.device_uuid)}): one is a copy")
        by_dev[f.sb.device_uuid] = f

    newest = max(found, key=lambda f: f.sb.events).sb
    # while a reshape shrinks the array, the old (larger) role set is still in use
    shrink = -newest.delta_disks if newest.feature_map & MD_FEATURE_RESHAPE_ACTIVE else 0
    roles_in_use = newest.raid_disks + max(0, shrink)
    by_role: dict[int, Found] = {}
    for f in found:
        roles = newest.dev_roles
        f.role = roles[f.sb.dev_number] if f.sb.dev_number < len(roles) else MD_DISK_ROLE_SPARE
        if f.role == MD_DISK_ROLE_FAULTY:
            raise AssemblyError(f"{f.path} was failed out of the array (events "
                                f"{f.sb.events}, array at {newest.events}): leave it out and "
                                "add it back to rebuild it")
        if f.role >= MD_DISK_ROLE_MAX:
            continue  # a spare: its events do not matter (md)
        if f.sb.events + EVENTS_SLACK < newest.events:
            raise AssemblyError(f"{f.path} is stale: events {f.sb.events}, the array is at "
                                f"{newest.events}; leave it out and add it back to rebuild it")
        if f.role >= roles_in_use:
            raise AssemblyError(f"{f.path} claims role {f.role} but the array has "
                                f"{roles_in_use} roles")
        if f.role in by_role:
            raise AssemblyError(f"{f.path} and {by_role[f.role].path} both claim role {f.role}")
        by_role[f.role] = f
    return found


def geometry_of(newest: Superblock, found: Sequence[Found]) -> Geometry:
    """The Geometry the superblocks describe (raid0: per-role sizes for zones)."""
    member_sizes = None
    dev_size = newest.size_bytes
    if newest.level == 0:
        sizes = {f.role: f.sb.data_size_bytes for f in found if f.role < MD_DISK_ROLE_MAX}
        if len(sizes) != newest.raid_disks:
            missing = [r for r in range(newest.raid_disks) if r not in sizes]
            raise AssemblyError(f"raid0 cannot run without roles {describe_missing(missing)}")
        per_role = tuple(sizes[r] for r in range(newest.raid_disks))
        dev_size = min(per_role)
        if len(set(per_role)) > 1:
            member_sizes = per_role
    try:
        return Geometry(level=newest.level, raid_disks=newest.raid_disks, layout=newest.layout,
                        chunk=newest.chunk_bytes, dev_size=dev_size, member_sizes=member_sizes)
    except GeometryError as e:
        raise AssemblyError(f"the superblocks describe an unusable array: {e}") from e


ReshapeOpener = Callable[..., tuple[SuperblockSet, list[Member], Any]]
"""reshape_opener(paths, readonly=...) -> (superblock set, members it opened, Reshape):
opens members whose superblocks record a reshape in progress. The migration layer
provides one (fuseraid.migration.open_array passes it); the engine never imports it."""

RESHAPE_REFUSED = ("a reshape is in progress on these members: mount them with `fuseraid "
                   "mount` (it resumes the reshape) or finish it offline with `fuseraid grow "
                   "--members ...`")


def _assemble_sync(paths: Sequence[str], readonly: bool, force: bool) -> Array:
    found = read_members(paths)
    newest = max(found, key=lambda f: f.sb.events).sb
    geometry = geometry_of(newest, found)
    role_sizes = geometry.role_sizes() if geometry.level == 0 else None
    for f in found:
        need = geometry.dev_used if role_sizes is None or f.role >= MD_DISK_ROLE_MAX \
            else role_sizes[f.role]
        if f.sb.data_size_bytes < need:
            raise AssemblyError(f"{f.path} is too small: {f.sb.data_size_bytes} data bytes "
                                f"after its data offset, the array needs {need}")

    present = {f.role for f in found if f.role < MD_DISK_ROLE_MAX}
    rebuilding = {f.role for f in found if f.role < MD_DISK_ROLE_MAX
                  and f.sb.feature_map & MD_FEATURE_RECOVERY_OFFSET}
    missing = [r for r in range(geometry.raid_disks) if r not in present or r in rebuilding]
    if not survives(geometry, missing):
        raise AssemblyError(f"too many members missing for raid{geometry.level}: roles "
                            f"{describe_missing(missing)} of {geometry.raid_disks}")
    unclean = newest.resync_offset != MAX_SECTOR
    if unclean and missing and geometry.level != 0 and not force:
        raise AssemblyError(f"the array was not stopped cleanly and is degraded (roles "
                            f"{describe_missing(missing)} missing): parity may be stale; md "
                            "refuses this too (use force to assemble anyway)")

    opened: list[Member] = []
    try:
        states: list[MemberState] = []
        for f in found:
            m = Member(f.path, readonly=readonly)
            opened.append(m)
            if f.role >= MD_DISK_ROLE_MAX:
                state, role = "spare", None
            else:
                state, role = ("rebuilding" if f.role in rebuilding else "active"), f.role
            states.append(MemberState(f.path, m, Entry(f.path, m, f.sb), role, state))
        sbset = SuperblockSet([ms.entry for ms in states], readonly=readonly)
        array = Array(geometry=geometry, superblocks=sbset, members=states,
                      readonly=readonly, resync_from=None)
        if unclean and geometry.level != 0:
            array.start_resync(array.rows_from_sectors(newest.resync_offset))
        for ms in states:
            if ms.state == "rebuilding":
                ms.recovered_rows = array.rows_from_sectors(ms.entry.sb.recovery_offset)
        return array
    except BaseException:
        for m in opened:
            m.close()
        raise


async def assemble(paths: Sequence[str], *, readonly: bool = False,
                   force: bool = False, reshape_opener: ReshapeOpener | None = None) -> Array:
    """Assemble the members (any order) into an Array; no background work starts and
    nothing is written until the first write (or Array.start). `force` accepts a dirty
    degraded array, as `mdadm --assemble --force` does. An array in mid-reshape needs
    `reshape_opener` (see ReshapeOpener; fuseraid.migration.assemble passes it); without
    one it is refused (AssemblyError, one line)."""
    paths = [os.fspath(p) for p in paths]
    sbs = await trio.to_thread.run_sync(_peek_reshape, paths)
    if sbs is not None:
        if reshape_opener is None:
            raise AssemblyError(RESHAPE_REFUSED)
        return await trio.to_thread.run_sync(_assemble_reshaping, paths, readonly,
                                             reshape_opener)
    return await trio.to_thread.run_sync(_assemble_sync, paths, readonly, force)


def _assemble_reshaping(paths: Sequence[str], readonly: bool, opener: ReshapeOpener) -> Array:
    """An array in mid-reshape: the migration opens it (its members, superblocks and
    Reshape) and its Border serves the array until the reshape finishes."""
    sbset, opened, reshape = opener(paths, readonly=readonly)
    try:
        # md: resync_offset != MaxSector means the array was not stopped cleanly. Rows
        # with writes in flight at the crash may have stale parity on either side of the
        # border; the reshape rewrites the old side (copied from data), and the whole new
        # geometry is resynced once it is done (Array.start_resync: the position is in
        # rows of the plain driver, which exists only after the reshape). Until then the
        # array stays dirty on disk: close() never writes MaxSector.
        unclean = sbset.newest.resync_offset != MAX_SECTOR
        new = reshape.plan.new
        states = []
        for e in sbset.entries:
            role = e.sb.role
            if role < new.raid_disks:
                states.append(MemberState(e.path, e.member, e, role, "active"))
        array = Array(geometry=new, superblocks=sbset, members=states,
                      readonly=readonly, resync_from=None, reshape=reshape)
        array.extra_members = list(opened)
        rebind = getattr(reshape, "rebind", None)
        if rebind is not None:
            # member errors of both drivers go through the array's failure policy, and
            # fail()/remove() clear their slots (finding 1)
            rebind(array.make_driver)
        if unclean and new.level != 0:
            array.start_resync(0)
        return array
    except BaseException:
        for m in opened:
            m.close()
        raise


def _peek_reshape(paths: Sequence[str]) -> list[Found] | None:
    """The checked superblocks when the newest says a reshape is in progress."""
    found = read_members(paths)
    newest = max(found, key=lambda f: f.sb.events).sb
    return found if newest.feature_map & MD_FEATURE_RESHAPE_ACTIVE else None


@asynccontextmanager
async def open_array(paths: Sequence[str], *, readonly: bool = False, force: bool = False,
                     reshape_opener: ReshapeOpener | None = None) -> AsyncIterator[Array]:
    """Assemble, mark active, run background work (resync, rebuild) while the body runs;
    on exit (also on cancellation or error) stop it, flush, mark clean, close members.
    reshape_opener: as for assemble() (None refuses an array in mid-reshape)."""
    array = await assemble(paths, readonly=readonly, force=force,
                           reshape_opener=reshape_opener)
    try:
        async with trio.open_nursery() as nursery:
            await array.start(nursery)
            try:
                yield array
            finally:
                array.stop_background()
                nursery.cancel_scope.cancel()
    finally:
        await array.close()


__all__ = ["EVENTS_SLACK", "RESHAPE_REFUSED", "FuseraidError", "ReshapeOpener", "assemble",
           "geometry_of", "open_array", "read_members"]
