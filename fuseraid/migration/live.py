"""A reshape started on a live, mounted Array (the control socket's "grow"): record it,
put the Border in front of the array, run the migrator in the array's nursery, and hand
the array its new geometry when the pass is done. (An array assembled mid-reshape is
resumed through fuseraid.migration.open_array: the engine runs runner.run_live.)
Only the Array's public API is used here (driver, busy(), role_holders(), spare_members(),
set_roles(), fit_roles(), make_driver()/unregister_slots(), adopt_volume(), kick())."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from typing import Any

import trio

from fuseraid.engine.array import MemberState
from fuseraid.engine.levels import Slot
from fuseraid.engine.locks import WHOLE
from fuseraid.errors import FuseraidError
from fuseraid.member.device import Member
from fuseraid.migration.migrator import Reshape, begin_reshape
from fuseraid.migration.plan import MAX_WINDOW, Request, target_geometry
from fuseraid.migration.runner import Control, run_live

log = logging.getLogger("fuseraid.migration")


def _members_by_role(roles: Sequence[Any]) -> list[Any]:
    return [ms.member if ms is not None and ms.state == "active" else None for ms in roles]


def _extra_roles(array: Any, request: Request) -> int:
    """How many roles the request adds (so how many spares/members it takes)."""
    target = target_geometry(array.geometry, request)
    return target.raid_disks - array.geometry.raid_disks


def _slot_of(ms: Any, offset: int) -> Slot | None:
    return Slot(ms.member, offset) if ms is not None and ms.state == "active" else None


async def start_live_reshape(
    array: Any,
    nursery: trio.Nursery,
    request: Request,
    *,
    add: Sequence[str] = (),
    backup_file: str | None = None,
    speed_limit: int | None = None,
    max_window: int = MAX_WINDOW,
    array_size: int | None = None,
) -> Reshape | None:
    """Record the reshape and start migrating in `nursery` (returns at once with the
    Reshape; array.reshape / array.reshape_control are set), or apply an instant change
    (returns None; added roles are rebuilt by the array's recovery). array_size cuts the
    exposed size first (what a shrink needs); bytes beyond it are dropped."""
    if array.readonly:
        raise FuseraidError("the array is read-only")
    opened: list[tuple[str, Member]] = []
    try:
        for p in add:
            opened.append((os.path.abspath(p), await trio.to_thread.run_sync(Member, p)))
        async with array.lock.exclusive(0, WHOLE):
            # checked under the whole-array lock: no rebuild, resync or other task can
            # start in between (finding 4)
            reason = array.busy()
            if reason is not None:
                raise FuseraidError(f"busy: {reason}")
            await trio.to_thread.run_sync(array.volume.flush)
            old_disks = array.geometry.raid_disks
            roles = array.role_holders()
            # the array's spares fill the new roles first, then the given members
            spares = array.spare_members()
            extra = max(0, _extra_roles(array, request))
            need = max(0, extra - len(spares))
            if len(opened) > need:
                raise FuseraidError(f"{len(opened)} member(s) given but the new geometry "
                                    f"needs {need} more (spares are used first)")
            given = [(ms.path, ms.member) for ms in spares] + opened
            built: list[list[Slot | None]] = []

            def factory(g: Any, slots: list[Slot | None]) -> Any:
                built.append(slots)
                return array.make_driver(g, slots)

            try:
                plan, reshape = await trio.to_thread.run_sync(functools.partial(
                    begin_reshape, array.superblocks, _members_by_role(roles), request,
                    add=given[:extra],
                    exposed=array.size if array_size is None else array_size,
                    backup_file=backup_file, max_window=max_window, driver_factory=factory))
            except BaseException:
                for slots in built:  # drivers built before the failure: not used
                    array.unregister_slots(slots)
                raise
            used = given[: max(0, plan.new.raid_disks - old_disks)]
            for i, (path, m) in enumerate(used):
                role = old_disks + i
                state = "rebuilding" if plan.instant and role in plan.rebuild_roles \
                    else "active"
                spare = next((ms for ms in spares if ms.member is m), None)
                if spare is not None:
                    spares.remove(spare)
                    spare.role, spare.state = role, state
                    roles.append(spare)
                else:
                    entry = array.superblocks.entry_for(m)
                    roles.append(MemberState(path, m, entry, role, state))
            array.set_roles(roles, spares)
            if reshape is None:  # instant: the data stays, the geometry changes
                array.fit_roles(plan.new.raid_disks)
                slots = [_slot_of(ms, plan.new_offsets[0]) for ms in array.role_holders()]
                array.adopt_volume(array.make_driver(plan.new, slots), plan.new)
            else:
                array.volume = reshape.volume
                array.reshape = reshape
                if plan.near_only:  # far copies by a resync once done (start commit: dirty)
                    array.start_resync(0)
    finally:
        for _, m in opened:  # given but not taken (an error): close again
            if array.superblocks.entry_for(m) is None:
                m.close()
    if reshape is None:
        array.kick()
        return None
    control = Control(speed_limit=speed_limit)
    array.reshape_control = control
    nursery.start_soon(_run, array, reshape, control)
    return reshape


async def _run(array: Any, reshape: Reshape, control: Control) -> None:
    plan = reshape.plan

    def finished(volume: Any) -> None:
        array.fit_roles(plan.new.raid_disks)
        array.adopt_volume(volume, plan.new)
        array.reshape = None

    try:
        await run_live(reshape, array.lock, control, finished)
        log.info("reshape to raid%d on %d disks finished", plan.new.level, plan.new.raid_disks)
    except (FuseraidError, OSError) as exc:
        log.warning("reshape stopped: %s", exc)
    array.kick()


def reshape_status(array: Any) -> dict[str, Any] | None:
    """What `fuseraid grow --status` / status show about a reshape in progress."""
    r = getattr(array, "reshape", None)
    control = getattr(array, "reshape_control", None)
    if r is None:
        return None
    plan = r.plan
    return {
        "from": _geom(plan.old),
        "to": _geom(plan.new),
        "direction": plan.direction,
        "position": r.border,
        "percent": round(100.0 * r.progress(), 2),
        "paused": bool(control and control.paused),
        "speed_limit": control.speed_limit if control else None,
        "error": control.error if control else None,
        # asked of the Reshape itself: right even while paused or before the pass saw it
        "waiting": r.waiting() if hasattr(r, "waiting") else None,
        "backup": getattr(r, "backup_where", None),
    }


def _geom(g: Any) -> dict[str, Any]:
    return {"level": g.level, "raid_disks": g.raid_disks, "layout": g.layout,
            "chunk": g.chunk, "size": g.array_size}
