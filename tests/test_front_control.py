"""The control channel over a real Unix socket, serving a real array (an md fixture
assembled by the engine): JSON lines, the handler registry, errors as one line,
SO_PEERCRED owner check, concurrent requests."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile

import pytest
import trio

from fuseraid.front import control
from fuseraid.migration import open_array

R5 = "r5-4-left-symmetric-c64"


async def _with_server(md_fixture, tmp_path, body, owner_uid=None, readonly=False,
                       sock_dir=None):
    meta, members = md_fixture(R5)
    path = os.path.join(sock_dir or str(tmp_path / "ctl"), "c.sock")
    listener = await control.open_listener(path)
    async with open_array([str(m) for m in members], readonly=readonly) as array:
        async with trio.open_nursery() as nursery:
            ctx = control.Context(
                array=array,
                mountpoint=str(tmp_path / "mp"),
                members=[str(m) for m in members],
                readonly=readonly,
                owner_uid=os.getuid() if owner_uid is None else owner_uid,
                nursery=nursery,
            )
            nursery.start_soon(control.serve, ctx, listener)
            try:
                await body(path, members)
            finally:
                nursery.cancel_scope.cancel()


def _req(path, op, **args):
    return trio.to_thread.run_sync(lambda: control.request_socket(path, op, **args))


async def test_socket_mode_is_owner_only(md_fixture, tmp_path):
    async def body(path, members):
        assert os.stat(path).st_mode & 0o777 == 0o600

    await _with_server(md_fixture, tmp_path, body)


async def test_builtin_requests(md_fixture, tmp_path):
    async def body(path, members):
        st = await _req(path, "status")
        assert st["size"] == 9437184 and st["pid"] == os.getpid() and st["level"] == 5
        assert st["mountpoint"] == str(tmp_path / "mp") and st["state"] in ("clean", "active")
        r = await _req(path, "fail", member="2")  # by role number
        assert (r["role"], r["state"], r["path"]) == (2, "faulty", str(members[2]))
        assert (await _req(path, "status"))["state"] == "degraded"
        r = await _req(path, "remove", member=str(members[2]))  # by path
        assert r["removed"]
        spare = tmp_path / "spare.img"
        spare.write_bytes(b"\0" * (4 << 20))
        r = await _req(path, "add", member=str(spare))
        assert r["role"] == 2
        while (await _req(path, "status"))["task"] is not None:
            await trio.sleep(0.05)
        st = await _req(path, "status")
        assert [m["state"] for m in st["members"]] == ["active"] * 4
        assert await _req(path, "check") == {"mismatches": 0, "repaired": False}
        assert (await _req(path, "ping"))["pid"] == os.getpid()

    await _with_server(md_fixture, tmp_path, body)


async def test_errors_are_one_line(md_fixture, tmp_path):
    async def body(path, members):
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
        with pytest.raises(control.ControlError, match="fail it before removing"):
            await _req(path, "remove", member=str(members[0]))  # the engine's refusal
        assert (await _req(path, "status"))["size"] == 9437184  # still serving

    await _with_server(md_fixture, tmp_path, body)


async def test_readonly_refuses_repair_and_add(md_fixture, tmp_path):
    async def body(path, members):
        with pytest.raises(control.ControlError, match="read-only"):
            await _req(path, "check", repair=True)
        with pytest.raises(control.ControlError, match="read-only"):
            await _req(path, "add", member="/x")
        assert (await _req(path, "check"))["mismatches"] == 0

    await _with_server(md_fixture, tmp_path, body, readonly=True)


async def test_registry_and_concurrency(md_fixture, tmp_path):
    """A registered handler is served with the context; a request that is still running
    does not block others."""
    seen = []
    gate = trio.Event()

    async def grow(ctx, args):
        seen.append(args)
        if args.get("boom"):
            raise RuntimeError("bug")
        if args.get("wait"):
            await gate.wait()
        return {"level": args["level"], "size": ctx.array.size}

    control.register("test-grow", grow)
    try:

        async def body(path, members):
            assert await _req(path, "test-grow", level=6) == {"level": 6, "size": 9437184}
            with pytest.raises(control.ControlError, match="internal error: RuntimeError"):
                await _req(path, "test-grow", level=6, boom=True)
            result = {}

            async def slow():
                result["grow"] = await _req(path, "test-grow", level=5, wait=True)

            async with trio.open_nursery() as n:
                n.start_soon(slow)
                # status answers while the other request is parked on its gate
                st = await _req(path, "status")
                assert st["size"] == 9437184 and "grow" not in result
                gate.set()
            assert result["grow"] == {"level": 5, "size": 9437184}

        await _with_server(md_fixture, tmp_path, body)
    finally:
        control._HANDLERS.pop("test-grow", None)
    assert seen[0] == {"level": 6}


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to switch user")
async def test_peer_not_owner_is_refused(md_fixture, tmp_path):
    """A client that is neither the owner nor root gets 'permission denied'."""

    async def body(path, members):
        os.chmod(path, 0o666)  # the socket mode is not what protects it: the peer check is

        def as_nobody():
            # a plain client in another process running as nobody (no fork of this one)
            code = (
                "import socket, sys\n"
                "s = socket.socket(socket.AF_UNIX)\n"
                "s.connect(sys.argv[1])\n"
                "s.sendall(b'{\"op\": \"status\"}\\n')\n"
                "print(s.makefile().readline())\n"
            )
            return subprocess.run(["/usr/bin/python3", "-c", code, path], user=65534,
                                  group=65534, capture_output=True, text=True)

        p = await trio.to_thread.run_sync(as_nobody)
        assert p.returncode == 0, p.stderr
        reply = json.loads(p.stdout)
        assert reply == {"ok": False, "error": "permission denied: not the mount owner or root"}

    sock_dir = tempfile.mkdtemp(prefix="fuseraid-ctl-")
    os.chmod(sock_dir, 0o755)
    try:
        await _with_server(md_fixture, tmp_path, body, owner_uid=12345, sock_dir=sock_dir)
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
