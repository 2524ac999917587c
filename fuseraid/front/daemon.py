"""The mount daemon's lifecycle: check the request, detach, assemble, mount, serve the
FUSE session and the control socket, and on umount / SIGTERM / SIGINT stop cleanly
(flush, mark the array clean, close the members, remove the socket).

Detaching is a double fork done before trio or any thread starts. The grandchild becomes
the daemon; the waiting parent learns through a pipe whether the mount is up (exit 0) or
why it is not (one line, exit 1)."""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.handlers
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from fuseraid.errors import FuseraidError
from fuseraid.front import control
from fuseraid.front.fs import ImageFS
from fuseraid.front.options import MountOptions

log = logging.getLogger("fuseraid.daemon")


class MountError(FuseraidError):
    """The mount cannot be made (bad mount point, bad members, FUSE refused)."""


@dataclass
class MountRequest:
    members: list[str]  # absolute paths
    mountpoint: str  # absolute path
    options: MountOptions = field(default_factory=MountOptions)


# ---- checks before anything is opened -----------------------------------------------


def check_request(members: list[str], mountpoint: str, options: MountOptions) -> MountRequest:
    """Validate members and mount point; nothing is opened for writing."""
    if not members:
        raise MountError("no members given")
    mp = os.path.abspath(mountpoint)
    if not os.path.exists(mp):
        raise MountError(f"mount point {mountpoint} does not exist")
    if not os.path.isdir(mp):
        raise MountError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mp):
        raise MountError(f"mount point {mountpoint} is already a mount point")
    try:
        if os.listdir(mp):
            raise MountError(f"mount point {mountpoint} is not empty")
    except PermissionError:
        raise MountError(f"mount point {mountpoint}: permission denied") from None
    seen: dict[tuple[int, int], str] = {}
    paths = []
    for m in members:
        p = os.path.abspath(m)
        try:
            st = os.stat(p)
        except FileNotFoundError:
            raise MountError(f"member {m} does not exist") from None
        except OSError as e:
            raise MountError(f"member {m}: {e.strerror}") from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise MountError(f"member {m} is not a regular file or block device")
        key = (st.st_rdev, 0) if stat.S_ISBLK(st.st_mode) else (st.st_dev, st.st_ino)
        if key in seen:
            raise MountError(f"member {m} is given twice (same as {seen[key]})")
        seen[key] = m
        paths.append(p)
    if options.log:
        options.log = os.path.abspath(options.log)
    if options.backup_file:  # made absolute before the daemon leaves the cwd
        options.backup_file = os.path.abspath(options.backup_file)
    return MountRequest(paths, mp, options)


# ---- the array --------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_array(paths: list[str], readonly: bool = False,
                     backup_file: str | None = None) -> AsyncIterator[Any]:
    """Assemble the array for the daemon's lifetime (resuming a reshape in progress, with
    its backup file if the mount option backup_file= gave one); closing it flushes and
    marks clean."""
    from fuseraid.migration import open_array as migration_open_array

    async with migration_open_array(paths, readonly=readonly, backup_file=backup_file) as array:
        yield array


# ---- logging ----------------------------------------------------------------------


def setup_logging(foreground: bool, logfile: str | None, debug: bool = False) -> None:
    root = logging.getLogger("fuseraid")
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler
    if logfile:
        handler = logging.FileHandler(logfile)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s[%(process)d]: %(message)s"))
    elif foreground:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler(
            address="/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON
        )
        handler.setFormatter(logging.Formatter("fuseraid[%(process)d]: %(message)s"))
    else:
        handler = logging.NullHandler()
    root.addHandler(handler)
    root.propagate = False


# ---- the daemon proper -------------------------------------------------------------


async def serve(
    req: MountRequest,
    ready: Callable[[str | None], None],
    opener: Callable[..., contextlib.AbstractAsyncContextManager[Any]] | None = None,
) -> None:
    """Assemble, mount, serve until unmounted or signalled, then stop cleanly.
    `ready(None)` once the mount is up. `opener(paths, readonly=)` replaces the engine's
    assembly (the benchmarks mount an in-memory array with it).

    SIGTERM/SIGINT/SIGHUP are handled for the whole life of the daemon: before the mount
    is up they abandon the start, while serving they end the FUSE loop, and during the
    clean stop further signals are ignored so the array is always closed cleanly."""
    life = _Life()
    try:
        async with trio.open_nursery() as outer:
            await outer.start(_watch_signals, life)
            with life.start_scope:
                await _serve(req, ready, opener or _default_opener(req), life)
            outer.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _unwrap(group) from None
    if life.start_scope.cancelled_caught:
        raise MountError("interrupted by a signal before the mount was up")


def _default_opener(req: MountRequest) -> Callable[..., Any]:
    backup = req.options.backup_file  # mount option backup_file=PATH
    return functools.partial(open_array, backup_file=backup or None)


def _unwrap(group: BaseExceptionGroup) -> BaseException:
    """The one error inside trio's exception groups (the signal task never fails), so
    a refused mount is still reported as its one line."""
    leaves: list[BaseException] = []

    def walk(e: BaseException) -> None:
        if isinstance(e, BaseExceptionGroup):
            for sub in e.exceptions:
                walk(sub)
        else:
            leaves.append(e)

    walk(group)
    for e in leaves:
        if isinstance(e, FuseraidError):
            return e
    return leaves[0] if len(leaves) == 1 else group


class _Life:
    """Where the daemon is in its life, for the signal handler."""

    def __init__(self) -> None:
        self.start_scope = trio.CancelScope()  # cancelled by a signal before mounting
        self.serving = False  # the FUSE loop runs: a signal terminates it
        self.stopping = False


async def _watch_signals(life: _Life, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if life.stopping:
                log.info("signal %s: already stopping", name)
            elif life.serving:
                log.info("signal %s: stopping", name)
                life.stopping = True
                pyfuse3.terminate()
            else:
                log.info("signal %s: abandoning the start", name)
                life.stopping = True
                life.start_scope.cancel()


async def _serve(
    req: MountRequest,
    ready: Callable[[str | None], None],
    opener: Callable[..., contextlib.AbstractAsyncContextManager[Any]],
    life: _Life,
) -> None:
    opts = req.options
    # The engine's members hold an exclusive flock: a second mount of them is refused.
    async with opener(req.members, readonly=opts.readonly) as array:
        sock_path = control.socket_path(req.mountpoint)
        fs = ImageFS(
            array,
            readonly=opts.readonly,
            allow_other=opts.allow_other,
            direct_io=not opts.page_cache,
            control_path=sock_path,
        )
        fuse_opts = opts.fuse_options(default_fsname="fuseraid")
        try:
            pyfuse3.init(fs, req.mountpoint, fuse_opts)
        except RuntimeError as e:
            raise MountError(f"FUSE mount on {req.mountpoint} failed: {e}") from None
        listener = None
        try:
            control.load_plugins()
            listener = await control.open_listener(sock_path)
            async with trio.open_nursery() as nursery:
                ctx = control.Context(
                    array=array,
                    mountpoint=req.mountpoint,
                    members=list(req.members),
                    readonly=opts.readonly,
                    owner_uid=os.getuid(),
                    nursery=nursery,
                    fs=fs,
                )
                nursery.start_soon(control.serve, ctx, listener)
                log.info(
                    "mounted %s on %s (%d bytes)", ":".join(req.members), req.mountpoint, array.size
                )
                if life.stopping:  # a signal came while we were mounting
                    nursery.cancel_scope.cancel()
                else:
                    life.serving = True
                    ready(None)
                    await pyfuse3.main()
                life.serving = False
                life.stopping = True
                nursery.cancel_scope.cancel()
        finally:
            life.serving = False
            life.stopping = True
            if listener is not None:
                with contextlib.suppress(OSError):
                    os.unlink(sock_path)
            # Detach the kernel side first so nothing waits on us while the array closes.
            pyfuse3.close(unmount=True)
            log.info("unmounted %s; closing the array", req.mountpoint)
    log.info("array closed cleanly")


def run_foreground(req: MountRequest) -> int:
    setup_logging(True, req.options.log)

    def ready(msg: str | None) -> None:
        if msg:
            print(f"fuseraid: {msg}", file=sys.stderr)

    try:
        trio.run(serve, req, ready)
    except FuseraidError as e:
        print(f"fuseraid: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def run_detached(req: MountRequest) -> int:
    """Double fork; return the exit status the mount command should have."""
    r, w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # first child: new session, fork again so the daemon is no session leader
        os.close(r)
        try:
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            _daemon_main(req, w)
        finally:
            os._exit(1)
    os.close(w)
    os.waitpid(pid, 0)
    with os.fdopen(r, "rb") as pipe:
        line = pipe.readline().decode(errors="replace").strip()
    if line == "ok":
        return 0
    msg = line.removeprefix("error: ") if line else "the daemon exited during startup"
    print(f"fuseraid: {msg}", file=sys.stderr)
    return 1


def _daemon_main(req: MountRequest, w: int) -> None:
    """Body of the detached daemon; never returns."""
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    setup_logging(False, req.options.log)
    reported = False

    def ready(msg: str | None) -> None:
        nonlocal reported
        if reported:
            return
        reported = True
        line = "ok" if msg is None else "error: " + " ".join(msg.split())
        with contextlib.suppress(OSError):
            os.write(w, line.encode() + b"\n")
            os.close(w)

    code = 0
    try:
        trio.run(serve, req, ready)
    except FuseraidError as e:
        log.error("%s", e)
        ready(str(e))
        code = 1
    except BaseException as e:  # report anything, so the parent never hangs silent
        log.exception("daemon failed")
        ready(f"internal error: {type(e).__name__}: {e}")
        code = 1
    finally:
        ready("the daemon exited during startup")
    os._exit(code)


def mount(members: list[str], mountpoint: str, options: MountOptions, foreground: bool) -> int:
    req = check_request(members, mountpoint, options)
    return run_foreground(req) if foreground else run_detached(req)
