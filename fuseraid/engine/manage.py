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
from typing import TYPE_CHECKING, Any, cast

import trio

from fuseraid.engine import mutators
from fuseraid.engine.locks import WHOLE
from fuseraid.engine.roster import MemberState
from fuseraid.engine.state import Entry
from fuseraid.engine.tolerance import describe_missing
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
    _check_survives(array, ms)
    async with array.lock.exclusive(0, WHOLE):  # no request runs on the old slots
        # again: while we waited, a reshape may have committed its first window (its
        # new geometry then counts) or another member may have failed
        _check_survives(array, ms)
        await trio.to_thread.run_sync(array.roster.fail_member, ms.member, "failed by request")
    array.background.after_failures()
    return {"path": ms.path, "role": ms.role, "state": ms.state}


def _check_survives(array: Array, ms: MemberState) -> None:
    """Refuse (one line) to fail `ms` when the array could not go on without it."""
    if ms.state != "active":
        return
    missing = sorted({*array.roster.missing(), ms.role})
    if not array.survives(missing):  # mid-reshape: both geometries' rule
        loss = getattr(array.reshape, "loss", None)
        why = loss(missing) if loss is not None else None
        raise FuseraidError(f"failing {ms.path} would leave roles "
                            f"{describe_missing(missing)} missing: "
                            f"{why or f'too many for raid{array.geometry.level}'}")


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
    array runs one, else before this returns), or it becomes a spare.

    During a reshape (docs/reshape.md "A member fails during a pass"): while the pass
    waits for a spare, the member takes a role only the new geometry has, in sync at
    once (the new layout holds nothing yet), and the pass goes on; otherwise it is a
    spare (md: no recovery during a reshape), rebuilt into a vacant role once the
    pass has finished."""
    if array.readonly:
        raise FuseraidError("the array is read-only")
    reshape = array.reshape
    if reshape is None and not array.redundant:
        raise FuseraidError("raid0 has no redundancy: it takes no spares")
    if array.roster.dead:
        raise FuseraidError(f"cannot add to a failed array ({array.roster.dead})")
    if reshape is None and array.driver is None:
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
    if reshape is not None:
        if ms.role is not None:  # the waiting pass goes on by itself
            wake = getattr(array.reshape_control, "spare_added", None)
            if wake is not None:
                wake()
        return {"path": path, "role": ms.role, "state": ms.state,
                "waiting": reshape.waiting()}
    background = array.background
    background.kick()
    if background.nursery is None and ms.state == "rebuilding":
        await background.run_rebuild(ms)
    return {"path": path, "role": ms.role, "state": ms.state}


def _reshape_role(array: Array, reshape: Any) -> int | None:
    """The role a member added during a reshape takes in sync at once (None: a spare).
    Raises when the member would be a spare nobody can use (a raid0 target)."""
    role = reshape.in_sync_role(array.roster.vacant())
    if role is None and reshape.waiting() is None and reshape.plan.new.level == 0:
        raise FuseraidError("raid0 has no redundancy: it takes no spares (only a reshape "
                            "that waits for one does)")
    return cast("int | None", role)


async def _add_member(array: Array, path: str, member: Member) -> MemberState:
    """Give `member` a superblock of this array (a free dev_number, a new device uuid)
    and a vacant role or the spares, and commit that."""
    newest = array.superblocks.newest
    data_offset = newest.data_offset_bytes
    g = array.geometry
    reshape = array.reshape
    need = data_offset + g.dev_used
    if reshape is not None:  # either geometry's place on the member
        need = max(need, int(reshape.member_bytes()))
    if member.size < need:
        raise FuseraidError(f"{path}: too small: {member.size} bytes, the array needs "
                            f"{need} (data offset {data_offset} + {g.dev_used})")
    used = {ms.entry.sb.dev_number for ms in array.members}
    dev = next(d for d in range(len(newest.dev_roles) + 1)
               if d not in used and (d >= len(newest.dev_roles)
                                     or newest.dev_roles[d] >= MD_DISK_ROLE_MAX))
    if reshape is not None:
        role = _reshape_role(array, reshape)
    else:
        missing = array.roster.vacant()
        role = missing[0] if missing and array.redundant else None
    in_sync = reshape is not None and role is not None
    sb = newest.replace(
        dev_number=dev,
        device_uuid=secrets.token_bytes(16),
        data_size=member.size // SECTOR - newest.data_offset,
        recovery_offset=0,
        cnt_corrected_read=0,
        devflags=0,
        feature_map=newest.feature_map & ~MD_FEATURE_RECOVERY_OFFSET,
    )
    state = "spare" if role is None else "active" if in_sync else "rebuilding"
    ms = MemberState(path, member, Entry(path, member, sb), role, state)
    record = mutators.assign(dev, MD_DISK_ROLE_SPARE if role is None else role,
                             None if role is None or in_sync else sb.device_uuid)
    array.roster.add(ms)
    await array.commit(record)
    if in_sync:
        assert role is not None and reshape is not None
        # durable order: every superblock records the role (committed just now)
        # before the pass may write to the member
        with array.roster.lock:
            reshape.place(role, member)
    log.info("%s added as %s", path, "spare" if role is None else f"role {role}")
    return ms
