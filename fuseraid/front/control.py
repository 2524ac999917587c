"""The control channel of a mount: a Unix socket the daemon listens on, one JSON object
per line each way.

Request:  {"op": "status", "args": {...}}
Reply:    {"ok": true, "result": ...}  or  {"ok": false, "error": "one line"}

Only the mount's owner or root may connect (checked with SO_PEERCRED). Handlers live in a
registry (register(op, handler)). Layers below the front must not import it, so they
expose a plain mapping instead, and the daemon registers it before it serves
(load_plugins): fuseraid/migration/control.py defines

    async def grow(ctx, args: dict) -> dict: ...   # ctx: a control.Context
    HANDLERS = {"grow": grow, ...}
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from fuseraid.errors import FuseraidError

log = logging.getLogger("fuseraid.control")

MAX_LINE = 1 << 20
SYSTEM_DIR = "/run/fuseraid"


class ControlError(FuseraidError):
    """The control channel refused or failed a request."""


@dataclass
class Context:
    """What a request handler may use: the live array and the mount around it."""

    array: Any
    mountpoint: str
    members: list[str]
    readonly: bool
    owner_uid: int
    nursery: trio.Nursery  # for work that outlives the request (e.g. a reshape)
    fs: Any = None
    extra: dict[str, Any] = field(default_factory=dict)  # shared state between plugins


Handler = Callable[[Context, dict[str, Any]], Awaitable[Any]]
_HANDLERS: dict[str, Handler] = {}


def register(op: str, handler: Handler) -> None:
    """Make `op` a control request served by `handler(ctx, args)`; its return value
    (JSON-serialisable) is the reply's result; a FuseraidError becomes the error line."""
    _HANDLERS[op] = handler


def handlers() -> dict[str, Handler]:
    return dict(_HANDLERS)


def load_plugins() -> None:
    """Register the requests of the layers below the front (grow, pause, resume,
    reshape); they expose HANDLERS, a plain mapping op -> handler, and never import
    the front."""
    from fuseraid.migration.control import HANDLERS

    for op, handler in HANDLERS.items():
        register(op, handler)


# ---- where the socket lives -------------------------------------------------------


def mount_key(mountpoint: str) -> str:
    return hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:24]


def socket_dir(uid: int | None = None) -> str:
    """/run/fuseraid for root; a per-user runtime folder otherwise."""
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return SYSTEM_DIR
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.access(runtime, os.W_OK):
        return os.path.join(runtime, "fuseraid")
    return f"/tmp/fuseraid-{uid}"


def socket_path(mountpoint: str, uid: int | None = None) -> str:
    return os.path.join(socket_dir(uid), mount_key(mountpoint) + ".sock")


def find_socket(mountpoint: str) -> str:
    """The control socket of the fuseraid mount at `mountpoint`, or ControlError."""
    from fuseraid.front.fs import CONTROL_XATTR

    mp = os.path.abspath(mountpoint)
    candidates = []
    try:  # the owner can ask the mount itself
        candidates.append(os.getxattr(mp, CONTROL_XATTR.decode()).decode())
    except OSError:
        pass
    candidates += [socket_path(mp), os.path.join(SYSTEM_DIR, mount_key(mp) + ".sock")]
    for path in candidates:
        if os.path.exists(path):
            return path
    if not os.path.isdir(mp):
        raise ControlError(f"{mountpoint}: no such mount point")
    raise ControlError(f"{mountpoint}: not a fuseraid mount (no control socket)")


# ---- server -----------------------------------------------------------------------


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


async def _read_line(stream: trio.SocketStream, buf: bytearray) -> bytes | None:
    while b"\n" not in buf:
        if len(buf) > MAX_LINE:
            raise ControlError("request line too long")
        chunk = await stream.receive_some(65536)
        if not chunk:
            return None
        buf += chunk
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


async def _dispatch(ctx: Context, line: bytes) -> dict[str, Any]:
    try:
        req = json.loads(line)
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            raise ControlError("request must be a JSON object with an 'op' string")
        op = req["op"]
        args = req.get("args") or {}
        if not isinstance(args, dict):
            raise ControlError("'args' must be a JSON object")
        handler = _HANDLERS.get(op)
        if handler is None:
            raise ControlError(f"unknown request {op!r} (known: {', '.join(sorted(_HANDLERS))})")
        result = await handler(ctx, args)
        return {"ok": True, "result": result}
    except json.JSONDecodeError as e:
        return {"ok": False, "error": f"bad JSON: {e}"}
    except FuseraidError as e:
        return {"ok": False, "error": str(e)}
    except OSError as e:
        return {"ok": False, "error": os.strerror(e.errno) if e.errno else str(e)}
    except Exception as e:  # a bug in a handler must not kill the mount
        log.exception("control request failed")
        return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}"}


async def _serve_one(ctx: Context, stream: trio.SocketStream) -> None:
    async with stream:
        uid = _peer_uid(stream.socket)
        buf = bytearray()
        if uid not in (0, ctx.owner_uid):
            # Let the client finish sending before answering and closing, so it reads
            # the refusal instead of a broken pipe. Nothing of the request is executed.
            with trio.move_on_after(2), contextlib.suppress(ControlError):
                await _read_line(stream, buf)
            reply = {"ok": False, "error": "permission denied: not the mount owner or root"}
            await stream.send_all(json.dumps(reply).encode() + b"\n")
            return
        while True:
            try:
                line = await _read_line(stream, buf)
            except ControlError as e:
                await stream.send_all(json.dumps({"ok": False, "error": str(e)}).encode() + b"\n")
                return
            if line is None:
                return
            if not line.strip():
                continue
            reply = await _dispatch(ctx, line)
            try:
                await stream.send_all(json.dumps(reply).encode() + b"\n")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return


async def open_listener(path: str) -> trio.SocketListener:
    """Bind the control socket at `path` (replacing a stale one), mode 0600."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    old_umask = os.umask(0o177)
    try:
        await sock.bind(path)
    finally:
        os.umask(old_umask)
    sock.listen(16)
    return trio.SocketListener(sock)


async def serve(ctx: Context, listener: trio.SocketListener) -> None:
    """Serve requests forever; each connection gets its own task, so a long `check`
    does not block `status`."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            await _serve_one(ctx, stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            log.debug("control connection dropped: %s", e)

    await trio.serve_listeners(handle, [listener], handler_nursery=ctx.nursery)


# ---- client -----------------------------------------------------------------------


def request(mountpoint: str, op: str, **args: Any) -> Any:
    """Send one request to the mount at `mountpoint`; its result, or ControlError."""
    return request_socket(find_socket(mountpoint), op, mountpoint=mountpoint, **args)


def request_socket(path: str, op: str, *, mountpoint: str = "", **args: Any) -> Any:
    """Send one request over the control socket at `path`."""
    mountpoint = mountpoint or path
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError as e:
            if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
                raise ControlError(f"{mountpoint}: the fuseraid daemon is not running") from None
            raise ControlError(f"{mountpoint}: control socket: {os.strerror(e.errno)}") from None
        try:
            s.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
        except BrokenPipeError:
            pass  # the daemon refused early; its one-line reply is waiting to be read
        data = bytearray()
        try:
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except OSError as e:
            msg = os.strerror(e.errno) if e.errno else str(e)
            raise ControlError(f"{mountpoint}: control connection: {msg}") from None
    if not data.endswith(b"\n"):
        raise ControlError(f"{mountpoint}: the daemon closed the control connection")
    try:
        reply = json.loads(data)
    except json.JSONDecodeError:
        raise ControlError(f"{mountpoint}: the daemon sent a malformed reply") from None
    if not isinstance(reply, dict) or not reply.get("ok"):
        err = reply.get("error") if isinstance(reply, dict) else None
        raise ControlError(str(err or "request failed"))
    return reply.get("result")


# ---- the built-in requests --------------------------------------------------------


def resolve_member(ctx: Context, member: Any) -> int | str:
    """A member named by role number or path -> role (int) or the absolute path."""
    if isinstance(member, int):
        return member
    if isinstance(member, str) and member.isdigit():
        return int(member)
    if not isinstance(member, str) or not member:
        raise ControlError("a member is named by its path or role number")
    return os.path.abspath(member)


async def _status(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    st = dict(ctx.array.status())
    st["mountpoint"] = ctx.mountpoint
    st["readonly"] = ctx.readonly
    st["pid"] = os.getpid()
    return st


async def _fail(ctx: Context, args: dict[str, Any]) -> Any:
    return await ctx.array.fail(resolve_member(ctx, args.get("member")))


async def _remove(ctx: Context, args: dict[str, Any]) -> Any:
    return await ctx.array.remove(resolve_member(ctx, args.get("member")))


async def _add(ctx: Context, args: dict[str, Any]) -> Any:
    path = args.get("member")
    if not isinstance(path, str) or not path:
        raise ControlError("add needs the path of the new member")
    if ctx.readonly:
        raise ControlError("the array is mounted read-only")
    return await ctx.array.add(os.path.abspath(path))


async def _check(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    repair = bool(args.get("repair", False))
    if repair and ctx.readonly:
        raise ControlError("the array is mounted read-only: cannot repair")
    mismatches = await ctx.array.check(repair=repair)
    return {"mismatches": int(mismatches), "repaired": repair}


async def _ping(ctx: Context, args: dict[str, Any]) -> dict[str, Any]:
    return {"pid": os.getpid(), "mountpoint": ctx.mountpoint}


for _op, _h in {
    "status": _status,
    "fail": _fail,
    "remove": _remove,
    "add": _add,
    "check": _check,
    "ping": _ping,
}.items():
    register(_op, _h)
