"""Array.status(): what `fuseraid status` and the control socket show about an array
(level, layout, state, every member and its role, the running task), as one dict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from fuseraid.errors import FuseraidError
from fuseraid.layout import layout_name

if TYPE_CHECKING:
    from fuseraid.engine.array import Array


def report(array: Array) -> dict[str, Any]:
    sb = array.superblocks.newest
    g = array.geometry
    lname: str | None = None
    if g.level in (5, 6, 10) or (g.level == 0 and g.layout):
        try:
            lname = layout_name(g.level, g.layout)
        except FuseraidError:
            lname = str(g.layout)
    roster = array.roster
    missing = roster.missing()
    if roster.dead:
        state = "failed"
    elif missing:
        state = "degraded"
    elif array.active and not array.readonly:
        state = "active"
    else:
        state = "clean"
    with roster.lock:
        roles, faulty, spares = list(roster.roles), list(roster.faulty), list(roster.spares)
    members = _members(array, roles, faulty, spares)
    running = array.background.task
    task = running.report(trio.current_time()) if running else None
    if task is None and array.reshape is not None:
        reshape = array.reshape
        total = int(reshape.plan.end)
        task = {"name": "reshape", "done_bytes": int(reshape.progress() * total),
                "total_bytes": total, "percent": round(100 * reshape.progress(), 2),
                "speed": None, "eta": None,
                "backup": getattr(reshape, "backup_where", None),
                # one line when the pass waits for a spare (docs/reshape.md)
                "waiting": reshape.waiting() if hasattr(reshape, "waiting") else None}
    return {
        "level": g.level,
        "layout": lname,
        "layout_number": g.layout,
        "chunk": g.chunk,
        "raid_disks": g.raid_disks,
        "size": array.size,
        "uuid": sb.set_uuid.hex(),
        "name": sb.name,
        "events": sb.events,
        "state": state,
        "in_sync": array.resync_row is None,
        "mismatch_cnt": array.mismatch_cnt,
        "members": members,
        "task": task,
    }


def _members(array: Array, roles: list[Any], faulty: list[Any],
             spares: list[Any]) -> list[dict[str, Any]]:
    """Every role in order (its holder, its failed member, or missing), then the other
    failed members, then the spares."""
    members: list[dict[str, Any]] = []
    listed: set[int] = set()
    driver = array.driver
    # mid-reshape the table holds the larger role set of the two geometries
    for role in range(max(array.geometry.raid_disks, len(roles))):
        ms = roles[role] if role < len(roles) else None
        if ms is None:
            # a failed member still answers to its role: list it once, as faulty
            f = next((f for f in reversed(faulty) if f.role == role), None)
            if f is not None:
                listed.add(id(f))
                members.append({"role": role, "path": f.path, "state": "faulty"})
            else:
                members.append({"role": role, "path": None, "state": "missing"})
        else:
            d = {"role": role, "path": ms.path, "state": ms.state}
            if ms.state == "rebuilding" and driver is not None:
                d["recovered_bytes"] = ms.recovered_rows * int(driver.row_bytes)
            members.append(d)
    for ms in faulty:
        if id(ms) not in listed:
            members.append({"role": ms.role, "path": ms.path, "state": "faulty"})
    for ms in spares:
        members.append({"role": None, "path": ms.path, "state": "spare"})
    return members
