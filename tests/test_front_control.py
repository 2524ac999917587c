"""The control channel over a real Unix socket: JSON lines, the handler registry,
errors as one line, SO_PEERCRED owner check, concurrent requests."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile

import pytest
import trio
from fsutil import MemArray

from fuseraid.front import control


class StatusArray(MemArray):
    """MemArray plus the member-management calls, recording what it was asked."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.calls: list[tuple[str, object]] = []
        self.check_gate = trio.Event()

    async def fail(self, member):
        self.calls.append(("fail", member))
        return {"role": member if isinstance(member, int) else 1}

    async def remove(self, member):
        self.calls.append(("remove", member))

    async def add(self, path):
        self.calls.append(("add", path))
        return {"role": 2}

    async def check(self, repair=False):
        await self.check_gate.wait()
        self.calls.append(("check", repair))
        return 3


async def _with_server(tmp_path, body, owner_uid=None, readonly=False, sock_dir=None):
    array = StatusArray(1 << 20)
    path = os.path.join(sock_dir or str(tmp_path / "ctl"), "c.sock")
    listener = await control.open_listener(path)
    async with trio.open_nursery() as nursery:
        ctx = control.Context(
            array=array,
            mountpoint=str(tmp_path / "mp"),
            members=["/a", "/b"],
            readonly=readonly,
            owner_uid=os.getuid() if owner_uid is None else owner_uid,
            nursery=nursery,
        )
        nursery.start_soon(control.serve, ctx, listener)
        try:
            await body(path, array)
        finally:
            nursery.cancel_scope.cancel()


def _req(path, op, **args):
    return trio.to_thread.run_sync(lambda: control.request_socket(path, op, **args))


async def test_socket_mode_is_owner_only(tmp_path):
    async def body(path, array):
        assert os.stat(path).st_mode & 0o777 == 0o600

    await _with_server(tmp_path, body)


async def test_builtin_requests(tmp_path):
    async def body(path, array):
        st = await _req(path, "status")
        assert st["size"] == 1 << 20 and st["pid"] == os.getpid()
        assert st["mountpoint"] == str(tmp_path / "mp")
        assert await _req(path, "fail", member="2") == {"role": 2}
        await _req(path, "remove", member=str(tmp_path / "x.img"))
        assert await _req(path, "add", member="rel.img") == {"role": 2}
        assert array.calls == [
            ("fail", 2),
            ("remove", str(tmp_path / "x.img")),
            ("add", os.path.abspath("rel.img")),
        ]
        assert (await _req(path, "ping"))["pid"] == os.getpid()

    await _with_server(tmp_path, body)


async def test_errors_are_one_line(tmp_path):
    async def body(path, array):
        with pytest.raises(control.ControlError, match=r"unknown request 'nope'"):
            await _req(path, "nope")
        with pytest.raises(control.ControlError, match="add needs the path"):
            await _req(path, "add")
        # Raw garbage on the wire gets an error reply, not a dropped daemon.
        def raw():
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                s.sendall(b"{not json\n[1,2]\n")
                return s.makefile().readline(), s.makefile().readline()

        first, _ = await trio.to_thread.run_sync(raw)
        assert '"ok": false' in first and "bad JSON" in first
        assert (await _req(path, "status"))["size"] == 1 << 20  # still serving

    await _with_server(tmp_path, body)


async def test_readonly_refuses_repair_and_add(tmp_path):
    async def body(path, array):
        with pytest.raises(control.ControlError, match="read-only"):
            await _req(path, "check", repair=True)
        with pytest.raises(control.ControlError, match="read-only"):
            await _req(path, "add", member="/x")

    await _with_server(tmp_path, body, readonly=True)


async def test_registry_and_concurrency(tmp_path):
    """A registered handler is served; a long request does not block status."""
    seen = []

    async def grow(ctx, args):
        seen.append(args)
        if args.get("boom"):
            raise RuntimeError("bug")
        return {"level": args["level"], "size": ctx.array.size}

    control.register("test-grow", grow)
    try:

        async def body(path, array):
            assert await _req(path, "test-grow", level=6) == {"level": 6, "size": 1 << 20}
            with pytest.raises(control.ControlError, match="internal error: RuntimeError"):
                await _req(path, "test-grow", level=6, boom=True)
            result = {}

            async def long_check():
                result["check"] = await _req(path, "check", repair=True)

            async with trio.open_nursery() as n:
                n.start_soon(long_check)
                # status answers while check is parked on its gate
                st = await _req(path, "status")
                assert st["size"] == 1 << 20 and "check" not in result
                array.check_gate.set()
            assert result["check"] == {"mismatches": 3, "repaired": True}

        await _with_server(tmp_path, body)
    finally:
        control._HANDLERS.pop("test-grow", None)
    assert seen[0] == {"level": 6}


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch user")
async def test_peer_not_owner_is_refused(tmp_path):
    """A client that is neither the owner nor root gets 'permission denied'."""
    async def body(path, array):
        os.chmod(path, 0o666)  # the socket mode is not what protects it: the peer check is

        def as_nobody():
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    os.setgid(65534)
                    os.setuid(65534)
                    control.request_socket(path, "status")
                except control.ControlError as e:
                    code = 0 if "permission denied" in str(e) else 2
                finally:
                    os._exit(code)
            return os.waitpid(pid, 0)[1]

        assert await trio.to_thread.run_sync(as_nobody) == 0

    sock_dir = tempfile.mkdtemp(prefix="fuseraid-ctl-")
    os.chmod(sock_dir, 0o755)
    try:
        await _with_server(tmp_path, body, owner_uid=12345, sock_dir=sock_dir)
    finally:
        shutil.rmtree(sock_dir)


def test_socket_path_depends_on_mountpoint(tmp_path):
    a = control.socket_path(str(tmp_path / "a"))
    assert a != control.socket_path(str(tmp_path / "b"))
    assert a == control.socket_path(str(tmp_path / "x" / ".." / "a"))


def test_find_socket_errors(tmp_path):
    with pytest.raises(control.ControlError, match="no such mount point"):
        control.find_socket(str(tmp_path / "missing"))
    with pytest.raises(control.ControlError, match="not a fuseraid mount"):
        control.find_socket(str(tmp_path))
