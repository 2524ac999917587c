"""A reshape started on a live, mounted Array (the control socket's "grow"): record it,
put the Border in front of the array, run the migrator in the array's nursery, and hand
the array its new geometry when the pass is done. (An array assembled mid-reshape is
resumed by the engine itself: Array(reshape=...) runs migrator.run_live.)"""

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
from fuseraid.migration.migrator import Control, Reshape, begin_reshape, run_live
from fuseraid.migration.plan import MAX_WINDOW, Plan, Request, target_geometry

log = logging.getLogger("fuseraid.migration")


def _members_by_role(array: Any) -> list[Any]:
    return [ms.member if ms is not None and ms.state == "active" else None
            for ms in array._roles]


def _fit_roles(array: Any, plan: Plan) -> None:
    """Size the array's role list to the new geometry; dropped roles become spares."""
    n = plan.new.raid_disks
    with array._state_lock:
        for ms in array._roles[n:]:
            if ms is not None:
                ms.role, ms.state = None, "spare"
                array._spares.append(ms)
        array._roles = array._roles[:n] + [None] * max(0, n - len(array._roles))


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
    if getattr(array, "reshape", None) is not None:
        raise FuseraidError("a reshape is already running")
    if array.volume is not array._driver:
        raise FuseraidError("busy: a rebuild is running; wait for it to finish")
    opened: list[tuple[str, Member]] = []
    try:
        for p in add:
            opened.append((os.path.abspath(p), await trio.to_thread.run_sync(Member, p)))
        async with array.lock.exclusive(0, WHOLE):
            await trio.to_thread.run_sync(array.volume.flush)
            old_disks = array.geometry.raid_disks
            # the array's spares fill the new roles first, then the given members
            spares = list(array._spares)
            need = max(0, _extra_roles(array, request) - len(spares))
            if len(opened) > need:
                raise FuseraidError(f"{len(opened)} member(s) given but the new geometry "
                                    f"needs {need} more (spares are used first)")
            given = [(ms.path, ms.member) for ms in spares] + opened
            plan, reshape = await trio.to_thread.run_sync(functools.partial(
                begin_reshape, array.superblocks, _members_by_role(array), request,
                add=given[: max(0, _extra_roles(array, request))],
                exposed=array.size if array_size is None else array_size,
                backup_file=backup_file,
                max_window=max_window, driver_factory=array.make_driver))
            used = given[: max(0, plan.new.raid_disks - old_disks)]
            with array._state_lock:
                for i, (path, m) in enumerate(used):
                    role = old_disks + i
                    state = "rebuilding" if plan.instant and role in plan.rebuild_roles \
                        else "active"
                    spare = next((ms for ms in spares if ms.member is m), None)
                    if spare is not None:
                        array._spares.remove(spare)
                        spare.role, spare.state = role, state
                        array._roles.append(spare)
                    else:
                        entry = array.superblocks.entry_for(m)
                        array._roles.append(MemberState(path, m, entry, role, state))
            if reshape is None:  # instant: the data stays, the geometry changes
                _fit_roles(array, plan)
                slots = [_slot_of(ms, plan.new_offsets[0]) for ms in array._roles]
                array.adopt_volume(array.make_driver(plan.new, slots), plan.new)
            else:
                array.volume = reshape.volume
                array.reshape = reshape
    finally:
        for _, m in opened:  # given but not taken (an error): close again
            if array.superblocks.entry_for(m) is None:
                m.close()
    if reshape is None:
        array._kick()
        return None
    control = Control(speed_limit=speed_limit)
    array.reshape_control = control
    nursery.start_soon(_run, array, reshape, control)
    return reshape


async def _run(array: Any, reshape: Reshape, control: Control) -> None:
    plan = reshape.plan

    def finished(volume: Any) -> None:
        _fit_roles(array, plan)
        array.adopt_volume(volume, plan.new)
        array.reshape = None

    try:
        await run_live(reshape, array.lock, control, finished)
        log.info("reshape to raid%d on %d disks finished", plan.new.level, plan.new.raid_disks)
    except (FuseraidError, OSError) as exc:
        log.warning("reshape stopped: %s", exc)
    array._kick()


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
    }


def _geom(g: Any) -> dict[str, Any]:
    return {"level": g.level, "raid_disks": g.raid_disks, "layout": g.layout,
            "chunk": g.chunk, "size": g.array_size}
