"""mdadm's manage mode on a running array: fail, remove and add a member (`mdadm --fail`,
`--remove`, `--add`); Array.fail/remove/add call these.

Each changes the roster (roster.py) and commits the superblocks (mutators.py). fail()
and remove() hold the whole-array exclusive lock while the member leaves the slots, so no
request still runs on a Slot of it (remove() closes its file). add() puts the new member
into a vacant role, rebuilt by the array's background work (background.py), or makes it
a spare.
"""

from __future__ import annotations

import logging
import os
import secrets
from typing import TYPE_CHECKING, Any

import trio

from fuseraid.engine import mutators
from fuseraid.engine.locks import WHOLE
from fuseraid.engine.roster import MemberState
from fuseraid.engine.state import Entry
from fuseraid.engine.tolerance import describe_missing, survives
from fuseraid.errors import FuseraidError
from fuseraid.member.device import Member
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_MAX,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_RECOVERY_OFFSET,
    SECTOR,
)

if TYPE_CHECKING:
    from fuseraid.engine.array import Array

log = logging.getLogger("fuseraid.engine")


async def fail(array: Array, which: int | str) -> dict[str, Any]:
    """Mark a member faulty (by role or path), like `mdadm --fail`."""
    if array.readonly:
        raise FuseraidError("the array is read-only")
    ms = array.roster.resolve(which)
    if ms.state == "faulty":
        raise FuseraidError(f"{ms.path} is already faulty")
    if ms.state == "active":
        missing = {*array.roster.missing(), ms.role}
        if not survives(array.geometry, missing):
            raise FuseraidError(f"failing {ms.path} would leave roles "
                                f"{describe_missing(missing)} missing: too many for "
                                f"raid{array.geometry.level}")
    async with array.lock.exclusive(0, WHOLE):  # no request runs on the old slots
        await trio.to_thread.run_sync(array.roster.fail_member, ms.member, "failed by request")
    array.background.after_failures()
    return {"path": ms.path, "role": ms.role, "state": ms.state}


async def remove(array: Array, which: int | str) -> dict[str, Any]:
    """Take a faulty member or a spare out of the array, like `mdadm --remove`."""
    if array.readonly:
        raise FuseraidError("the array is read-only")
    ms = array.roster.resolve(which)
    if ms.state not in ("faulty", "spare"):
        raise FuseraidError(f"{ms.path} is {ms.state}: fail it before removing it")
    dev = ms.entry.sb.dev_number
    # No request may still use the member's file when it is closed (a request that
    # took its Slot before an automatic fail could otherwise hit a closed, or reused,
    # file descriptor): take the whole array, as fail() does.
    async with array.lock.exclusive(0, WHOLE):
        array.roster.remove(ms)
        await array.commit(mutators.faulty(dev))
        await trio.to_thread.run_sync(ms.member.close)
    return {"path": ms.path, "removed": True}


async def add(array: Array, path: str) -> dict[str, Any]:
    """Add a member: it takes a missing role and is rebuilt (in the background when the
    array runs one, else before this returns), or it becomes a spare."""
    if array.readonly:
        raise FuseraidError("the array is read-only")
    if not array.redundant:
        raise FuseraidError("raid0 has no redundancy: it takes no spares")
    if array.roster.dead:
        raise FuseraidError(f"cannot add to a failed array ({array.roster.dead})")
    if array.driver is None:
        raise FuseraidError("busy: a reshape is in progress")
    real = os.path.realpath(path)
    for ms in array.members:
        if os.path.realpath(ms.path) == real:
            raise FuseraidError(f"{path} is already a member of this array")
    member = await trio.to_thread.run_sync(lambda: Member(path))
    try:
        ms = await _add_member(array, path, member)
    except BaseException:
        member.close()
        raise
    background = array.background
    background.kick()
    if background.nursery is None and ms.state == "rebuilding":
        await background.run_rebuild(ms)
    return {"path": path, "role": ms.role, "state": ms.state}


async def _add_member(array: Array, path: str, member: Member) -> MemberState:
    """Give `member` a superblock of this array (a free dev_number, a new device uuid)
    and a vacant role or the spares, and commit that."""
    newest = array.superblocks.newest
    data_offset = newest.data_offset_bytes
    g = array.geometry
    need = data_offset + g.dev_used
    if member.size < need:
        raise FuseraidError(f"{path}: too small: {member.size} bytes, the array needs "
                            f"{need} (data offset {data_offset} + {g.dev_used})")
    used = {ms.entry.sb.dev_number for ms in array.members}
    dev = next(d for d in range(len(newest.dev_roles) + 1)
               if d not in used and (d >= len(newest.dev_roles)
                                     or newest.dev_roles[d] >= MD_DISK_ROLE_MAX))
    missing = array.roster.vacant()
    role = missing[0] if missing and array.redundant else None
    sb = newest.replace(
        dev_number=dev,
        device_uuid=secrets.token_bytes(16),
        data_size=member.size // SECTOR - newest.data_offset,
        recovery_offset=0,
        cnt_corrected_read=0,
        devflags=0,
        feature_map=newest.feature_map & ~MD_FEATURE_RECOVERY_OFFSET,
    )
    ms = MemberState(path, member, Entry(path, member, sb), role,
                     "spare" if role is None else "rebuilding")
    record = mutators.assign(dev, MD_DISK_ROLE_SPARE if role is None else role,
                             None if role is None else sb.device_uuid)
    array.roster.add(ms)
    await array.commit(record)
    log.info("%s added as %s", path, "spare" if role is None else f"role {role}")
    return ms
