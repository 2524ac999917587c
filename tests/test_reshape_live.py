"""Live reshape on an assembled Array (trio): an md array left half reshaped is resumed
by the assembler and finished in the background; a live grow runs while foreground
readers and writers hammer the array and compare with the model."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import trio
import trio.testing
from test_migration_kit import KIB, make_array, read_array

from fuseraid.layout import Geometry
from fuseraid.migration import open_array
from fuseraid.migration.live import start_live_reshape
from fuseraid.migration.plan import Request

PARKED = "r5-4to5-left-symmetric-c64-grow-parked50"


async def test_assembler_resumes_md_parked_reshape(md_fixture) -> None:
    meta, paths = md_fixture(PARKED)
    async with open_array([str(p) for p in paths]) as array:
        assert array.reshape.border == 12288 * 512
        data = await array.read(0, meta["array_bytes"])
        assert hashlib.sha256(data).hexdigest() == meta["array_sha256"]
        with trio.fail_after(60):
            while array.reshape_control is None:
                await trio.sleep(0.01)
            await array.reshape_control.finished.wait()
        assert array.reshape_control.error is None and array.reshape is None
        assert array.size == meta["resume"]["array_bytes_after"]
        data = await array.read(0, array.size)
        assert hashlib.sha256(data).hexdigest() == meta["resume"]["array_sha256_after"]
        assert await array.check() == 0
    _, data, bad = read_array(paths)
    assert hashlib.sha256(data).hexdigest() == meta["resume"]["array_sha256_after"]
    assert bad == 0


async def _parked(array, *, windows: int = 1) -> None:
    """Event-driven, no sleeps: wait until the migrator has moved the border at least
    `windows` times, pause it, and return once it is parked between windows (its loop is
    in Control.wait_unpaused with the pause seen). The border cannot move after that."""
    control = array.reshape_control
    parked = trio.Event()
    wait = control.wait_unpaused

    async def wait_and_tell() -> None:
        if control.paused:
            parked.set()
        await wait()

    control.wait_unpaused = wait_and_tell
    with trio.fail_after(60):
        while array.reshape.windows < windows:
            await trio.sleep(0.005)
        control.pause()
        await parked.wait()


async def _hammer(array, model: bytearray, rng: random.Random, stop: trio.Event) -> int:
    """Random writes and read-backs against the model until stop; returns requests done."""
    n = 0
    while not stop.is_set():
        size = rng.randrange(1, 24 * KIB)
        off = rng.randrange(0, len(model) - size)
        if rng.random() < 0.5:
            data = rng.randbytes(size)
            await array.write(off, data)
            model[off : off + size] = data
        else:
            assert await array.read(off, size) == bytes(model[off : off + size])
        n += 1
        await trio.sleep(0)
    return n


async def test_live_grow_under_load(tmp_path: Path) -> None:
    old = Geometry(5, 3, 2, 16 * KIB, 512 * KIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=1024 * KIB,
                                        data_offset=256 * KIB, extra=1)
    model = bytearray(content)
    rng = random.Random(5)
    done = {"n": 0}
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        live = await start_live_reshape(array, nursery, Request(raid_disks=4),
                                        add=[str(extras[0])], max_window=64 * KIB,
                                        speed_limit=4 << 20)
        assert live is not None
        stop = trio.Event()

        async def load() -> None:
            done["n"] = await _hammer(array, model, rng, stop)

        nursery.start_soon(load)
        with trio.fail_after(120):
            await array.reshape_control.finished.wait()
        stop.set()
        assert array.reshape_control.error is None
        assert array.geometry.raid_disks == 4 and array.size == 3 * 512 * KIB
        await trio.sleep(0)
    assert done["n"] > 10
    _, data, bad = read_array(paths + extras)
    assert data[: len(model)] == bytes(model)
    assert data[len(model) :] == bytes(len(data) - len(model))
    assert bad == 0


async def test_pause_and_resume(tmp_path: Path) -> None:
    old = Geometry(6, 4, 2, 16 * KIB, 256 * KIB)
    paths, _, content = make_array(tmp_path, old, member_bytes=768 * KIB, data_offset=256 * KIB)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        live = await start_live_reshape(array, nursery, Request(layout=10), max_window=32 * KIB)
        assert live is not None
        control = array.reshape_control
        await _parked(array)
        pos = live.border
        await trio.testing.wait_all_tasks_blocked()  # everything idle, the pass too
        assert live.border == pos and not live.done  # really paused
        assert await array.read(0, len(content)) == content
        control.resume()
        with trio.fail_after(60):
            await control.finished.wait()
        assert array.geometry.layout == 10
    _, data, bad = read_array(paths)
    assert data == content and bad == 0


async def test_unmount_mid_reshape_then_resume(tmp_path: Path) -> None:
    old = Geometry(5, 4, 2, 16 * KIB, 512 * KIB)
    paths, _, content = make_array(tmp_path, old, member_bytes=1024 * KIB,
                                   data_offset=256 * KIB)
    model = bytearray(content)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(layout=0, chunk=8 * KIB),
                                     max_window=32 * KIB, speed_limit=256 * KIB)
        assert r is not None
        await _parked(array)  # mid-reshape: at least one window moved, then parked
        await array.write(100 * KIB, b"x" * 5000)
        model[100 * KIB : 100 * KIB + 5000] = b"x" * 5000
        assert not r.done
        nursery.cancel_scope.cancel()  # the mount goes away mid-reshape
    async with open_array([str(p) for p in paths]) as array:
        assert array.reshape is not None and 0 < array.reshape.border < len(content)
        assert await array.read(0, array.size) == bytes(model)
        with trio.fail_after(60):
            while array.reshape_control is None:
                await trio.sleep(0.01)
            await array.reshape_control.finished.wait()
        assert array.geometry.layout == 0 and array.geometry.chunk == 8 * KIB
    _, data, bad = read_array(paths)
    assert data == bytes(model) and bad == 0


async def test_live_instant_raid5_to_raid6_rebuilds_q(tmp_path: Path) -> None:
    old = Geometry(5, 4, 2, 16 * KIB, 256 * KIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(level=6, layout=18, raid_disks=5),
                                     add=[str(extras[0])])
        assert r is None  # instant: no data moved
        assert array.geometry.level == 6 and array.size == len(content)
        assert await array.read(0, array.size) == content
        with trio.fail_after(60):
            await array.wait_idle()  # the Q role is rebuilt by the array's recovery
        assert await array.check() == 0
    g, data, bad = read_array(paths + extras)
    assert (g.level, g.layout, g.raid_disks) == (6, 18, 5) and data == content and bad == 0


async def test_live_grow_uses_a_spare(tmp_path: Path) -> None:
    old = Geometry(5, 3, 2, 16 * KIB, 256 * KIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        assert (await array.add(str(extras[0])))["state"] == "spare"
        r = await start_live_reshape(array, nursery, Request(raid_disks=4))
        assert r is not None
        with trio.fail_after(60):
            await array.reshape_control.finished.wait()
        st = array.status()
        assert [m["state"] for m in st["members"]] == ["active"] * 4
    g, data, bad = read_array(paths + extras)
    assert g.raid_disks == 4 and data[: len(content)] == content and bad == 0


async def test_member_failed_during_live_reshape(tmp_path: Path) -> None:
    old = Geometry(6, 4, 2, 16 * KIB, 512 * KIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=1024 * KIB,
                                        data_offset=256 * KIB, extra=1)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(raid_disks=5),
                                     add=[str(extras[0])], max_window=32 * KIB,
                                     speed_limit=1 << 20)
        assert r is not None
        await _parked(array)
        await array.fail(2)  # like mdadm --fail in the middle of the reshape
        assert not r.done
        array.reshape_control.speed_limit = None
        array.reshape_control.resume()
        with trio.fail_after(60):
            await array.reshape_control.finished.wait()
        assert array.reshape_control.error is None
        assert await array.read(0, len(content)) == content
        assert array.status()["state"] == "degraded"
    survivors = [p for p in paths + extras if p != paths[2]]
    g, data, _ = read_array(survivors)
    assert g.raid_disks == 5 and data[: len(content)] == content
