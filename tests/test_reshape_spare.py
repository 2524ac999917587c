"""A member of the new geometry fails during a pass (docs/reshape.md "A member fails
during a pass"): before any window is committed the array goes on from the old layout
and the pass waits for a spare, which `add` puts into the lacking role in sync; once the
new layout holds data the same failure is refused; a member added while a redundant
pass runs is a spare until the finish, then rebuilt. Also after a remount, offline, and
through a real FUSE mount."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing
from fsutil import fuseraid, fuseraid_mount, unmount
from test_array import examine_state
from test_migration_kit import KIB, make_array, read_array, superblocks
from test_reshape_live import _parked

from fuseraid.errors import FuseraidError
from fuseraid.layout import Geometry
from fuseraid.migration import open_array
from fuseraid.migration.live import reshape_status, start_live_reshape
from fuseraid.migration.plan import Request
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_RECOVERY_OFFSET,
    read_superblock,
)

MEMBER, OFFSET = 1024 * KIB, 256 * KIB
R0_2 = Geometry(0, 2, 0, 16 * KIB, MEMBER - OFFSET)  # the whole data area: content = array
ADD = "fuseraid add MOUNTPOINT MEMBER"


def _blank(path: Path) -> Path:
    with open(path, "wb") as f:
        f.truncate(MEMBER)
    return path


async def _waiting(array) -> str:
    """Wait until the pass itself says it waits for a spare; its line."""
    with trio.fail_after(30):
        while array.reshape_control is None:  # an assembled array starts it in start()
            await trio.sleep(0.005)
        control = array.reshape_control
        while control.waiting is None:
            assert control.error is None, control.error
            await trio.sleep(0.005)
    return control.waiting


async def _finished(array) -> None:
    control = array.reshape_control
    with trio.fail_after(60):
        await control.finished.wait()
    assert control.error is None and control.waiting is None and array.reshape is None


def _check_grown(paths: list[Path], x: Path, y: Path, model: bytes) -> None:
    """raid0 on 3 with y in role 2, x recorded faulty, the model's content, md-valid."""
    survivors = [*paths, y]
    g, data, _ = read_array(survivors)
    assert (g.level, g.raid_disks) == (0, 3)
    assert data[: len(model)] == model and data[len(model) :] == bytes(len(data) - len(model))
    x_dev = read_superblock(x).dev_number
    sbs = superblocks(survivors)
    ysb = read_superblock(y)
    assert len({sb.events for sb in sbs}) == 1
    # x recorded faulty; or, once an assembly left it out, its slot taken by y (md too)
    assert ysb.dev_number == x_dev or all(sb.dev_roles[x_dev] == MD_DISK_ROLE_FAULTY
                                          for sb in sbs)
    assert ysb.role == 2 and not ysb.feature_map & MD_FEATURE_RECOVERY_OFFSET
    assert not any(sb.reshape_active for sb in sbs)
    assert examine_state(paths[0]) == "AAA"  # mdadm reads it as a whole raid0 on 3


@contextlib.contextmanager
def full_tmpfs(where: Path, member: str) -> Iterator[Path]:
    """A member file on a small tmpfs whose first 8 KiB (its superblock) are allocated
    and whose data areas (old and new offset) are a hole; fill() leaves the tmpfs no free page, so
    every write into the data area fails with ENOSPC (a real I/O error from the
    kernel; the superblock's page is rewritten in place and still works). Unmounted on
    exit, also on failure."""
    if os.geteuid() != 0:
        pytest.skip("needs root (mounts a tmpfs)")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(where)], check=True)
    try:
        path = where / member
        with open(path, "wb") as f:
            f.write(bytes(8 * KIB))
            f.truncate(MEMBER)
        yield path
    finally:
        unmount(where)
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(where: Path) -> None:
    with open(where / "fill", "wb", buffering=0) as f, contextlib.suppress(OSError):
        while True:  # page by page (tmpfs allocates pages) until ENOSPC
            f.write(bytes(4 * KIB))


# ---- case 3: nothing committed yet, the pass waits ------------------------------------


async def test_failed_new_member_waits_for_spare(tmp_path: Path) -> None:
    paths, (x, y), content = make_array(tmp_path, R0_2, member_bytes=MEMBER,
                                        data_offset=OFFSET, extra=2)
    model = bytearray(content)
    async with open_array(paths) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(raid_disks=3), add=[str(x)],
                                     max_window=32 * KIB)
        assert r is not None
        await _parked(array, windows=0)  # before its first window
        await array.fail(str(x))  # allowed: the new layout holds nothing yet
        assert r.durable == 0 and r.windows == 0 and array.roster.dead is None
        line = array.status()["task"]["waiting"]
        assert "role 2" in line and ADD in line and "\n" not in line
        assert reshape_status(array)["waiting"] == line
        assert array.status()["state"] == "degraded"
        control = array.reshape_control
        control.resume()
        assert await _waiting(array) == line  # the pass found it out by itself
        assert await array.read(0, len(model)) == bytes(model)
        for off, n in ((0, 5000), (len(model) - 7000, 7000), (300 * KIB, 64 * KIB)):
            data = os.urandom(n)
            await array.write(off, data)
            model[off : off + n] = data
        await array.flush()
        assert await array.read(0, len(model)) == bytes(model)
        # pause while waiting: the spare ends the wait, the pause holds the pass
        control.pause()
        res = await array.add(str(y))
        assert res == {"path": str(y), "role": 2, "state": "active", "waiting": None}
        assert read_superblock(y).dev_roles[read_superblock(y).dev_number] == 2
        await trio.testing.wait_all_tasks_blocked()
        assert r.windows == 0 and control.waiting is None and control.paused
        control.resume()
        await _finished(array)
        assert array.geometry.raid_disks == 3
        assert await array.read(0, len(model)) == bytes(model)
    _check_grown(paths, x, y, bytes(model))


async def test_new_member_io_error_waits_for_spare(tmp_path: Path) -> None:
    """X fails through a real ENOSPC on the first window's write (its file on a full
    tmpfs), not through `fail`."""
    paths, (y,), content = make_array(tmp_path, R0_2, member_bytes=MEMBER,
                                      data_offset=OFFSET, extra=1)
    with full_tmpfs(tmp_path / "small", "x.img") as x:
        fill(x.parent)
        async with open_array(paths) as array, trio.open_nursery() as nursery:
            r = await start_live_reshape(array, nursery, Request(raid_disks=3),
                                         add=[str(x)], max_window=32 * KIB)
            assert r is not None
            line = await _waiting(array)
            assert "role 2" in line and ADD in line
            assert r.durable == 0 and array.roster.dead is None
            assert [m["state"] for m in array.status()["members"]] == \
                ["active", "active", "faulty"]
            x_dev = read_superblock(x).dev_number
            assert all(sb.dev_roles[x_dev] == MD_DISK_ROLE_FAULTY
                       for sb in superblocks(paths))  # committed before the wait
            assert await array.read(0, len(content)) == content
            assert (await array.add(str(y)))["role"] == 2
            await _finished(array)
        _check_grown(paths, x, y, content)


async def test_role_of_both_geometries_is_not_rebuilt_while_waiting(tmp_path: Path) -> None:
    """The limit: a vacant role the old geometry also has would need a rebuild in the
    old layout; an added member stays a spare and the line says why."""
    old = Geometry(5, 3, 2, 16 * KIB, 512 * KIB)
    paths, (y,), content = make_array(tmp_path, old, member_bytes=MEMBER,
                                      data_offset=OFFSET, extra=1)
    async with open_array(paths) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(level=0, raid_disks=3),
                                     max_window=32 * KIB)
        assert r is not None
        await _parked(array, windows=0)
        await array.fail(1)  # raid5 does without it, the raid0 target cannot
        line = r.waiting()
        assert line is not None and "lacks role 1" in line and "stays a spare" in line
        assert ADD not in line  # adding does not help: no command to suggest
        res = await array.add(str(y))
        assert (res["role"], res["state"], res["waiting"]) == (None, "spare", line)
        array.reshape_control.resume()
        assert await _waiting(array) == line
        assert r.windows == 0 and await array.read(0, len(content)) == content
        nursery.cancel_scope.cancel()


# ---- case 2: the new layout holds data, the failure is refused ------------------------


async def test_fail_refused_once_new_layout_holds_data(tmp_path: Path) -> None:
    paths, (x,), content = make_array(tmp_path, R0_2, member_bytes=MEMBER,
                                      data_offset=OFFSET, extra=1)
    async with open_array(paths) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(raid_disks=3), add=[str(x)],
                                     max_window=32 * KIB)
        assert r is not None
        await _parked(array, windows=2)
        assert r.durable > 0
        before = [p.read_bytes()[: OFFSET] for p in [*paths, x]]
        with pytest.raises(FuseraidError) as info:
            await array.fail(str(x))
        msg = str(info.value)
        assert "\n" not in msg and "would leave roles 2 missing" in msg
        assert "already holds data" in msg
        assert [p.read_bytes()[: OFFSET] for p in [*paths, x]] == before  # nothing written
        assert array.roster.dead is None and r.waiting() is None
        array.reshape_control.resume()
        await _finished(array)
    g, data, _ = read_array([*paths, x])
    assert g.raid_disks == 3 and data[: len(content)] == content


# ---- a redundant pass: the added member is a spare until the finish -------------------


async def test_add_during_running_pass_is_spare_then_rebuilt(tmp_path: Path) -> None:
    old = Geometry(5, 4, 2, 16 * KIB, 512 * KIB)
    paths, (x, y), content = make_array(tmp_path, old, member_bytes=MEMBER,
                                        data_offset=OFFSET, extra=2)
    async with open_array(paths) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(level=6, raid_disks=5),
                                     add=[str(x)], max_window=32 * KIB)
        assert r is not None
        await _parked(array)
        await array.fail(1)  # both geometries do without role 1: the pass goes on
        assert r.waiting() is None
        res = await array.add(str(y))
        assert (res["role"], res["state"], res["waiting"]) == (None, "spare", None)
        sb = read_superblock(y)
        assert sb.dev_roles[sb.dev_number] == MD_DISK_ROLE_SPARE
        array.reshape_control.resume()
        await _finished(array)
        with trio.fail_after(60):
            await array.wait_idle()  # the array's recovery: spare -> role 1, rebuilt
        st = array.status()
        assert st["state"] != "degraded" and (st["level"], st["raid_disks"]) == (6, 5)
        holder = next(m for m in st["members"] if m["role"] == 1 and m["state"] == "active")
        assert holder["path"] == str(y)
        assert await array.check() == 0
        assert await array.read(0, len(content)) == content
    g, data, bad = read_array([paths[0], y, *paths[2:], x])
    assert (g.level, g.raid_disks) == (6, 5) and data[: len(content)] == content and bad == 0
    sb = read_superblock(y)
    assert sb.role == 1 and not sb.feature_map & MD_FEATURE_RECOVERY_OFFSET


# ---- after a restart ---------------------------------------------------------------------


async def test_remount_while_waiting(tmp_path: Path) -> None:
    paths, (x, y), content = make_array(tmp_path, R0_2, member_bytes=MEMBER,
                                        data_offset=OFFSET, extra=2)
    async with open_array(paths) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(raid_disks=3), add=[str(x)],
                                     max_window=32 * KIB)
        assert r is not None
        await _parked(array, windows=0)
        await array.fail(str(x))
        x_dev = read_superblock(x).dev_number
        assert all(sb.dev_roles[x_dev] == MD_DISK_ROLE_FAULTY for sb in superblocks(paths))
        nursery.cancel_scope.cancel()  # the mount goes away while the pass waits
    # offline: refused with one line (only a mounted array takes a spare)
    before = [sb.events for sb in superblocks(paths)]
    p = fuseraid("grow", "--members", *paths, check=False)
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("fuseraid:")]
    assert p.returncode == 1 and len(errors) == 1, p.stderr
    assert "waiting for a spare" in errors[0] and "role 2" in errors[0]
    assert [sb.events for sb in superblocks(paths)] == before
    async with open_array(paths) as array:  # assembles; the pass waits again
        line = await _waiting(array)
        assert "role 2" in line and ADD in line
        assert await array.read(0, len(content)) == content
        assert (await array.add(str(y)))["role"] == 2
        await _finished(array)
        assert await array.read(0, len(content)) == content
    _check_grown(paths, x, y, content)


async def test_assembly_refuses_new_geometry_without_role_once_it_holds_data(
        tmp_path: Path) -> None:
    paths, (x,), content = make_array(tmp_path, R0_2, member_bytes=MEMBER,
                                      data_offset=OFFSET, extra=1)
    async with open_array(paths) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(raid_disks=3), add=[str(x)],
                                     max_window=32 * KIB)
        assert r is not None
        await _parked(array, windows=2)
        nursery.cancel_scope.cancel()
    before = [p.read_bytes()[: OFFSET] for p in paths]
    with pytest.raises(FuseraidError) as info:
        async with open_array(paths):  # x left out: its role holds data already
            pass
    assert "\n" not in str(info.value) and "already holds data" in str(info.value)
    assert [p.read_bytes()[: OFFSET] for p in paths] == before
    async with open_array([*paths, x]) as array:  # with it: goes on
        await _finished_assembled(array)
        assert await array.read(0, len(content)) == content


async def _finished_assembled(array) -> None:
    with trio.fail_after(30):
        while array.reshape_control is None:
            await trio.sleep(0.005)
    await _finished(array)


# ---- through the real mount ---------------------------------------------------------------


@pytest.mark.skipif(not Path("/dev/fuse").exists() or shutil.which("mdadm") is None,
                    reason="needs /dev/fuse and mdadm")
def test_waiting_through_mount(tmp_path: Path) -> None:
    paths, (y,), content = make_array(tmp_path, R0_2, member_bytes=MEMBER,
                                      data_offset=OFFSET, extra=1)
    with full_tmpfs(tmp_path / "small", "x.img") as x:
        fill(x.parent)
        with fuseraid_mount(paths, tmp_path / "mp") as mp:
            assert "reshape started" in fuseraid("grow", mp, "--raid-devices", "3",
                                                 "--add", x).stdout
            deadline = time.monotonic() + 30
            while True:
                task = json.loads(fuseraid("status", "--json", mp).stdout)["task"] or {}
                if task.get("waiting"):
                    break
                assert time.monotonic() < deadline, task
                time.sleep(0.1)
            assert "role 2" in task["waiting"] and ADD in task["waiting"]
            assert "waiting for a spare" in fuseraid("grow", "--status", mp).stdout
            assert "waiting" in fuseraid("status", mp).stdout
            assert (mp / "image").read_bytes() == content
            assert "added (role 2)" in fuseraid("add", mp, y).stdout
            deadline = time.monotonic() + 60
            while "no reshape" not in fuseraid("grow", "--status", mp).stdout:
                assert time.monotonic() < deadline
                time.sleep(0.1)
            assert (mp / "image").read_bytes()[: len(content)] == content
        _check_grown(paths, x, y, content)
