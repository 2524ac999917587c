"""The Array: request semantics, concurrency, member failure, rebuild, resync."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pattern import secpat

import fuseraid.engine.background as background_mod
from fuseraid.engine.assemble import assemble, open_array
from fuseraid.engine.create import create
from fuseraid.errors import FuseraidError
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    MD_FEATURE_RECOVERY_OFFSET,
    SB_OFFSET,
    read_superblock,
)


def hashes(paths) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


async def read_all(array) -> bytes:
    return await array.read(0, array.size)


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def examine_state(path) -> str:
    out = subprocess.run(["mdadm", "--examine", str(path)], capture_output=True, text=True,
                         check=True).stdout
    line = next(ln for ln in out.splitlines() if "Array State" in ln)
    return line.split(":", 1)[1].split()[0]


# ---- request semantics ------------------------------------------------------------------


async def test_bounds(md_fixture):
    meta, paths = md_fixture("r5-4-left-symmetric-c64")
    size = meta["array_bytes"]
    async with open_array(paths) as array:
        before = hashes(paths)
        assert await array.read(size - 10, 100) == secpat(1, 10, size - 10)
        assert await array.read(size, 10) == b""
        assert await array.read(size + 4096, 10) == b""
        assert await array.read(5, 0) == b""
        for off in (size - 10, size, size + 1):
            with pytest.raises(OSError) as info:
                await array.write(off, b"x" * 11)
            assert info.value.errno == errno.ENOSPC
        with pytest.raises(OSError) as info:
            await array.read(-1, 10)
        assert info.value.errno == errno.EINVAL
        assert hashes(paths) == before  # refused writes touched nothing
        assert await array.write(size - 11, b"y" * 11) == 11
        assert await array.read(size - 11, 11) == b"y" * 11


async def test_readonly_writes_nothing(md_fixture):
    meta, paths = md_fixture("r6-5-left-symmetric-c64")
    before = hashes(paths)
    async with open_array(paths, readonly=True) as array:
        with pytest.raises(OSError) as info:
            await array.write(0, b"x")
        assert info.value.errno == errno.EROFS
        with pytest.raises(FuseraidError):
            await array.fail(1)
        assert await array.check() == 0
        await array.flush()
    assert hashes(paths) == before


async def test_active_while_open_clean_after(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    events = read_superblock(paths[0]).events
    async with open_array(paths) as array:
        sbs = [read_superblock(p) for p in paths]
        assert all(sb.resync_offset == 0 for sb in sbs)  # md: active
        assert array.status()["state"] == "active"
    sbs = [read_superblock(p) for p in paths]
    assert all(sb.resync_offset == MAX_SECTOR for sb in sbs)
    assert {sb.events for sb in sbs} == {events + 2}


async def test_raid0_superblocks_untouched(md_fixture):
    _, paths = md_fixture("r0-3-c64")
    sbs = [Path(p).read_bytes()[SB_OFFSET : SB_OFFSET + 4096] for p in paths]
    async with open_array(paths) as array:
        await array.write(0, b"z" * 5000)
    assert [Path(p).read_bytes()[SB_OFFSET : SB_OFFSET + 4096] for p in paths] == sbs


# ---- concurrency -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["r5-4-left-symmetric-c64", "r6-5-ddf-N-restart-c64",
                                  "r4-4-c64", "r10-3-n2-c64", "r1-2"])
async def test_concurrent_overlapping_writers(md_fixture, name):
    meta, paths = md_fixture(name)
    size = meta["array_bytes"]
    model = bytearray(secpat(1, size))
    rng = random.Random(name)
    hot = 256 * 1024  # every write lands in the first rows: lots of overlap

    async with open_array(paths) as array:

        async def writer(seed: int) -> None:
            r = random.Random(seed)
            for i in range(12):
                off = r.randrange(0, hot)
                n = r.randrange(1, 70_000)
                data = r.randbytes(n)
                await array.write(off, data)
                # overlapping writes finish in lock order, and this line runs before
                # the next writer of an overlapping range is scheduled
                model[off : off + n] = data
                if i % 4 == 0:
                    got = await array.read(off, n)
                    assert len(got) == n

        async with trio.open_nursery() as nursery:
            for w in range(8):
                nursery.start_soon(writer, rng.randrange(1 << 30) + w)
        assert await read_all(array) == bytes(model)
        assert await array.check() == 0
    async with open_array(paths, readonly=True) as array:
        assert await read_all(array) == bytes(model)


async def test_swap_volume_waits_for_requests(md_fixture):
    _, paths = md_fixture("r1-2")
    async with open_array(paths) as array:
        vol = array.volume
        req = await array.lock.acquire(0, 4096, exclusive=False)
        swapped = trio.Event()

        async def swap() -> None:
            await array.swap_volume(vol)
            swapped.set()

        async with trio.open_nursery() as n:
            n.start_soon(swap)
            await trio.testing.wait_all_tasks_blocked()
            assert not swapped.is_set()
            array.lock.release(req)
        assert swapped.is_set() and array.volume is vol


# ---- member failure ----------------------------------------------------------------------


@pytest.mark.parametrize("name,victims", [("r5-4-left-symmetric-c64", [2]),
                                          ("r6-5-left-symmetric-c64", [0, 3]),
                                          ("r10-4-n2-c64", [1])])
async def test_fail_members_mid_writes(md_fixture, name, victims):
    meta, paths = md_fixture(name)
    size = meta["array_bytes"]
    model = bytearray(secpat(1, size))
    async with open_array(paths) as array:

        async def writer(seed: int) -> None:
            r = random.Random(seed)
            for _ in range(20):
                off = r.randrange(0, size - 100_000)
                data = r.randbytes(r.randrange(1, 100_000))
                await array.write(off, data)
                model[off : off + len(data)] = data

        async def failer() -> None:
            for v in victims:
                await trio.sleep(0)
                await array.fail(v)

        async with trio.open_nursery() as n:
            for s in range(4):
                n.start_soon(writer, s)
            n.start_soon(failer)
        st_ = array.status()
        assert st_["state"] == "degraded"
        assert sorted(m["role"] for m in st_["members"] if m["state"] == "faulty") == victims
        assert await read_all(array) == bytes(model)
        # one more failure would lose data: refused
        survivor = next(r for r in range(4) if r not in victims and r not in (0,))
        with pytest.raises(FuseraidError, match="would leave"):
            await array.fail(0 if name.startswith("r10") else survivor)
    live = [p for r, p in enumerate(paths) if r not in victims]
    for p in live:  # the survivors record the failed roles
        sb = read_superblock(p)
        failed_devs = [read_superblock(paths[v]).dev_number for v in victims]
        assert all(sb.dev_roles[d] == MD_DISK_ROLE_FAULTY for d in failed_devs)
    async with open_array(live, readonly=True) as array:
        assert await read_all(array) == bytes(model)
    with pytest.raises(FuseraidError, match="failed out|stale"):
        await assemble([str(p) for p in paths])


async def test_member_io_error_fails_member(md_fixture):
    """A real I/O error (the member file shrinks under the array): the member is failed,
    its role recorded faulty, and reads stay right (reconstructed)."""
    meta, paths = md_fixture("r5-4-left-symmetric-c64")
    size = meta["array_bytes"]
    async with open_array(paths) as array:
        os.truncate(paths[1], 1 << 20)  # data area gone: reads get EOF
        assert await read_all(array) == secpat(1, size)
        st_ = array.status()
        assert st_["state"] == "degraded"
        assert [m["role"] for m in st_["members"] if m["state"] == "faulty"] == [1]
        await array.write(12345, b"after")
        assert await array.read(12345, 5) == b"after"
    assert examine_state(paths[0]) == "A.AA"


async def test_beyond_tolerance_gives_eio(md_fixture):
    meta, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    async with open_array(paths) as array:
        os.truncate(paths[0], 1 << 20)
        with pytest.raises(OSError) as info:
            await read_all(array)
        assert info.value.errno == errno.EIO
        assert array.status()["state"] == "failed"


# ---- rebuild -------------------------------------------------------------------------------


async def test_add_to_degraded_rebuilds(md_fixture, tmp_path):
    meta, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    new = blank(tmp_path / "new.img", 4 << 20)
    async with open_array(paths) as array:
        res = await array.add(str(new))
        assert res == {"path": str(new), "role": 2, "state": "rebuilding"}
        await array.wait_idle()
        assert array.status()["state"] == "active"
        assert await array.check() == 0
        assert hashlib.sha256(await read_all(array)).hexdigest() == meta["array_sha256"]
    sb = read_superblock(new)
    assert sb.role == 2 and not sb.feature_map & MD_FEATURE_RECOVERY_OFFSET
    assert examine_state(paths[0]) == "AAAA"
    async with open_array([new, *paths], readonly=True) as array:
        assert await array.check() == 0


@pytest.mark.parametrize("name,victim", [("r1-3", 0), ("r10-4-f2-c64", 3),
                                         ("r10-3-n2-c64", 1), ("r6-5-parity-first-c64", 4)])
async def test_fail_remove_add_rebuild(md_fixture, tmp_path, name, victim):
    meta, paths = md_fixture(name)
    new = blank(tmp_path / "new.img", 4 << 20)
    async with open_array(paths) as array:
        await array.write(1000, b"before")
        await array.fail(victim)
        await array.write(200_000, b"degraded write")
        await array.remove(str(paths[victim]))
        await array.add(str(new))
        await array.write(300_000, b"during")
        await array.wait_idle()
        assert await array.check() == 0
        data = await read_all(array)
    expect = bytearray(secpat(1, meta["array_bytes"]))
    for off, b in ((1000, b"before"), (200_000, b"degraded write"), (300_000, b"during")):
        expect[off : off + len(b)] = b
    assert data == bytes(expect)
    members = [p for r, p in enumerate(paths) if r != victim] + [new]
    async with open_array(members[::-1], readonly=True) as array:
        assert await read_all(array) == bytes(expect)
        assert await array.check() == 0


async def test_spare_takes_over_a_failed_role(md_fixture, tmp_path):
    meta, paths = md_fixture("r5-4-left-symmetric-c64")
    spare = blank(tmp_path / "spare.img", 4 << 20)
    async with open_array(paths) as array:
        assert (await array.add(str(spare)))["state"] == "spare"
        await array.fail(3)
        await array.wait_idle()
        roles = {m["path"]: m for m in array.status()["members"]}
        assert roles[str(spare)]["role"] == 3 and roles[str(spare)]["state"] == "active"
        assert await array.check() == 0
        assert hashlib.sha256(await read_all(array)).hexdigest() == meta["array_sha256"]


async def test_rebuild_resumes_from_checkpoint(md_fixture, tmp_path, monkeypatch):
    monkeypatch.setattr(background_mod, "BATCH_BYTES", 64 * 1024)
    monkeypatch.setattr(background_mod, "CHECKPOINT_SECONDS", 0.0)
    meta, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    new = blank(tmp_path / "new.img", 4 << 20)
    async with open_array(paths) as array:
        await array.add(str(new))
        while (array.status()["task"] or {}).get("done_bytes", 0) < 3 << 20:
            await trio.sleep(0)
    sb = read_superblock(new)
    assert sb.feature_map & MD_FEATURE_RECOVERY_OFFSET
    done = sb.recovery_offset
    assert 0 < done < 6144  # a real checkpoint, not the start and not the end
    array = await assemble([str(p) for p in [*paths, new]])
    try:
        ms = next(m for m in array.members if m.path == str(new))
        assert ms.state == "rebuilding" and ms.recovered_rows * 64 * 1024 == done * 512
    finally:
        await array.close()
    async with open_array([*paths, new]) as array:
        await array.wait_idle()
        assert array.status()["state"] == "active"
        assert await array.check() == 0
        assert hashlib.sha256(await read_all(array)).hexdigest() == meta["array_sha256"]


# ---- resync after an unclean stop ------------------------------------------------------------


async def test_unclean_stop_resyncs(md_fixture):
    meta, paths = md_fixture("r5-4-left-symmetric-c64")
    size = meta["array_bytes"]
    model = bytearray(secpat(1, size))
    async with trio.open_nursery() as nursery:
        array = await assemble([str(p) for p in paths])
        await array.start(nursery)
        await array.write(70_000, b"w" * 50_000)
        model[70_000:120_000] = b"w" * 50_000
        array.abandon()  # crash: no flush, no clean mark
    assert all(read_superblock(p).resync_offset == 0 for p in paths)
    # a torn stripe: parity of row 5 never made it (role 0 holds parity in row 3
    # of left-symmetric on 4 disks; scribble over every member's chunk 5 parity spot)
    with open(paths[(3 - 5 % 4) % 4], "r+b") as f:
        f.seek(read_superblock(paths[0]).data_offset_bytes + 5 * 65536)
        f.write(b"\xff" * 4096)
    async with open_array(paths, readonly=True) as array:  # read-only: no resync
        assert await array.check() == 8  # the torn 4 KiB page, in md's sectors
    async with open_array(paths) as array:
        assert await read_all(array) == bytes(model)  # usable before the resync is done
    async with open_array(paths) as array:
        await array.wait_idle()
        assert array.status()["in_sync"]
        assert await array.check() == 0
        assert await read_all(array) == bytes(model)
    assert all(read_superblock(p).resync_offset == MAX_SECTOR for p in paths)


async def test_resync_checkpoint_on_clean_stop(md_fixture, monkeypatch):
    monkeypatch.setattr(background_mod, "BATCH_BYTES", 192 * 1024)
    _, paths = md_fixture("r6-5-left-symmetric-c64")
    for p in paths:  # md stopped while active: everything needs a resync
        sb = read_superblock(p)
        with open(p, "r+b") as f:
            f.seek(SB_OFFSET)
            f.write(sb.replace(resync_offset=0).encode())
    async with open_array(paths) as array:
        while (array.status()["task"] or {}).get("done_bytes", 0) < 3 << 20:
            await trio.sleep(0)
    offs = {read_superblock(p).resync_offset for p in paths}
    assert len(offs) == 1
    off = offs.pop()
    assert 0 < off < MAX_SECTOR and off % 128 == 0  # whole 64 KiB rows
    array = await assemble([str(p) for p in paths])
    assert array._resync_row == off * 512 // 65536
    await array.close()
    async with open_array(paths) as array:
        await array.wait_idle()
        assert await array.check() == 0


# ---- property: random requests against a bytearray model ---------------------------------


@pytest.fixture(scope="module")
def small_raid6(tmp_path_factory):
    d = tmp_path_factory.mktemp("r6")
    paths = [str(blank(d / f"m{i}.img", 3 << 20)) for i in range(5)]
    trio.run(lambda: create(paths, level=6, raid_disks=5, chunk=16384, layout="left-symmetric"))
    return paths


ops = st.lists(
    st.tuples(st.booleans(), st.integers(0, 6 << 20), st.integers(0, 200_000),
              st.integers(0, 255)),
    min_size=1, max_size=12)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_random_requests_match_model(small_raid6, ops):
    async def run() -> None:
        async with open_array(small_raid6) as array:
            size = array.size
            model = bytearray(await read_all(array))
            for is_write, off, n, fill in ops:
                if is_write:
                    data = bytes([fill]) * n
                    if off + n > size:
                        with pytest.raises(OSError):
                            await array.write(off, data)
                    else:
                        await array.write(off, data)
                        model[off : off + n] = data
                else:
                    assert await array.read(off, n) == bytes(model[off : off + n])
            assert await array.check() == 0

    trio.run(run)


@pytest.mark.parametrize("name", ["r5-4-left-symmetric-c64-degraded", "r6-5-right-asymmetric-c64",
                                  "r10-4-o2-c64"])
async def test_writes_during_rebuild(md_fixture, tmp_path, monkeypatch, name):
    """Foreground writes on both sides of the rebuild border while it moves: parity must
    never be computed from the new member's not-yet-rebuilt bytes."""
    monkeypatch.setattr(background_mod, "BATCH_BYTES", 128 * 1024)
    meta, paths = md_fixture(name)
    size = meta["array_bytes"]
    model = bytearray(secpat(1, size))
    new = blank(tmp_path / "new.img", 4 << 20)
    async with open_array(paths) as array:
        if "degraded" not in name:
            await array.fail(1)
            await array.remove(1)  # by role: the failed member still answers to it
        await array.add(str(new))

        async def writer(seed: int) -> None:
            r = random.Random(seed)
            while array.status()["task"] is not None:
                off = r.randrange(0, size - 20_000)
                data = r.randbytes(r.randrange(1, 20_000))
                await array.write(off, data)
                model[off : off + len(data)] = data
                await trio.sleep(0)

        async with trio.open_nursery() as n:
            for s in range(3):
                n.start_soon(writer, s)
        await array.wait_idle()
        assert array.status()["state"] == "active"
        assert await read_all(array) == bytes(model)
        assert await array.check() == 0


async def test_add_refusals(md_fixture, tmp_path):
    _, r0 = md_fixture("r0-3-c64")
    spare = blank(tmp_path / "s.img", 4 << 20)
    async with open_array(r0) as array:
        with pytest.raises(FuseraidError, match="raid0"):
            await array.add(str(spare))
    _, r5 = md_fixture("r5-4-left-symmetric-c64-degraded")
    small = blank(tmp_path / "small.img", 1 << 20)
    async with open_array(r5) as array:
        with pytest.raises(FuseraidError, match="already a member"):
            await array.add(str(r5[0]))
        with pytest.raises(FuseraidError, match="too small"):
            await array.add(str(small))
        assert array.status()["state"] == "degraded"
    assert small.read_bytes() == b"\0" * (1 << 20)


async def test_write_before_resync_fixes_parity_of_its_rows(md_fixture):
    """Parity that is stale after a crash gets recomputed for the rows a write touches,
    even before the background resync reaches them (read-modify-write alone would keep
    it stale)."""
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    for p in paths:  # md stopped while active
        sb = read_superblock(p)
        with open(p, "r+b") as f:
            f.seek(SB_OFFSET)
            f.write(sb.replace(resync_offset=0).encode())
    doff = read_superblock(paths[0]).data_offset_bytes
    for row in (5, 7):  # tear the parity of rows 5 and 7 (left-symmetric: role 3 - row % 4)
        with open(paths[3 - row % 4], "r+b") as f:
            f.seek(doff + row * 65536)
            f.write(b"\xff" * 4096)
    array = await assemble([str(p) for p in paths])  # no background resync
    try:
        drv = array._driver
        assert await trio.to_thread.run_sync(drv.scrub, 5, 8) == 16
        await array.write(5 * 3 * 65536 + 100, b"fix")  # a small write into row 5
        assert await trio.to_thread.run_sync(drv.scrub, 5, 6) == 0
        assert await trio.to_thread.run_sync(drv.scrub, 7, 8) == 8  # untouched: still torn
        assert await array.read(5 * 3 * 65536 + 100, 3) == b"fix"
    finally:
        await array.close()
