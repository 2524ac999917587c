"""Control-socket requests of a mounted array's reshape: "grow" (start one), "pause",
"resume", "reshape" (its status). HANDLERS maps each request to its handler
`handler(ctx, args)`; the front (which sits above the migration) registers them
(fuseraid.front.control.load_plugins). ctx is the front's control Context: this module
uses only its .array, .nursery and .readonly, and never imports the front."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fuseraid.errors import FuseraidError
from fuseraid.layout.names import layout_number
from fuseraid.migration.live import reshape_status, start_live_reshape
from fuseraid.migration.plan import Request


def request_from_args(args: dict[str, Any], current_level: int) -> Request:
    """A Request from JSON args (level, raid_disks, chunk bytes, layout name/number)."""
    level = args.get("level")
    layout = args.get("layout")
    if isinstance(layout, str) and not layout.isdigit():
        layout = layout_number(current_level if level is None else int(level), layout)
    return Request(
        level=None if level is None else int(level),
        raid_disks=None if args.get("raid_disks") is None else int(args["raid_disks"]),
        chunk=None if args.get("chunk") is None else int(args["chunk"]),
        layout=None if layout is None else int(layout),
        single_copy=bool(args.get("single_copy", False)),
    )


async def _grow(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    if ctx.readonly:
        raise FuseraidError("the array is mounted read-only")
    array = ctx.array
    req = request_from_args(args, array.geometry.level)
    speed = args.get("speed_limit")
    cut = args.get("array_size")
    started = await start_live_reshape(
        array, ctx.nursery, req, add=list(args.get("add") or []),
        backup_file=args.get("backup_file"), speed_limit=int(speed) if speed else None,
        array_size=int(cut) if cut else None)
    if started is None:
        g = array.geometry
        return {"instant": True, "level": g.level, "raid_disks": g.raid_disks,
                "layout": g.layout, "size": array.size}
    return {"instant": False, **(reshape_status(array) or {})}


def _control_of(ctx: Any) -> Any:
    c = getattr(ctx.array, "reshape_control", None)
    if getattr(ctx.array, "reshape", None) is None or c is None:
        raise FuseraidError("no reshape is running")
    return c


async def _pause(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    _control_of(ctx).pause()
    return reshape_status(ctx.array) or {}


async def _resume(ctx: Any, args: dict[str, Any]) -> dict[str, Any]:
    c = _control_of(ctx)
    if args.get("speed_limit") is not None:
        c.speed_limit = int(args["speed_limit"]) or None
    c.resume()
    return reshape_status(ctx.array) or {}


async def _status(ctx: Any, args: dict[str, Any]) -> dict[str, Any] | None:
    st = reshape_status(ctx.array)
    if st is None:
        c = getattr(ctx.array, "reshape_control", None)
        if c is not None and c.error:
            return {"error": c.error, "done": False}
        return None
    return st


HANDLERS: dict[str, Callable[[Any, dict[str, Any]], Awaitable[Any]]] = {
    "grow": _grow,
    "pause": _pause,
    "resume": _resume,
    "reshape": _status,
}
