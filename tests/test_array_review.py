"""Regressions for the engine findings of the code review (one test per fix; each failed
before its fix)."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.testing

import fuseraid.engine.background as background_mod
from fuseraid.engine.assemble import assemble, open_array
from fuseraid.member.device import Member
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    SB_OFFSET,
    read_superblock,
)

PARKED = "r5-4to5-left-symmetric-c64-grow-parked50"


def blank(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def make_dirty(paths) -> None:
    """As if md had stopped while active: resync_offset 0 on every member."""
    for p in paths:
        sb = read_superblock(p)
        with open(p, "r+b") as f:
            f.seek(SB_OFFSET)
            f.write(sb.replace(resync_offset=0).encode())


def superblock_bytes(paths) -> list[bytes]:
    return [Path(p).read_bytes()[SB_OFFSET : SB_OFFSET + 4096] for p in paths]


# ---- finding 2: degraded write while a resync is pending ---------------------------------


async def test_degraded_write_with_resync_pending(md_fixture):
    """A member fails while the array still needs a resync: writes to rows the resync
    has not reached must succeed (degraded, read-modify-write), not fail with EIO after
    their data was written."""
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    make_dirty(paths)
    array = await assemble([str(p) for p in paths])  # no nursery: the resync never runs
    try:
        assert array.resync_row == 0
        await array.fail(1)
        off = array.size - 65536
        assert await array.write(off, b"y" * 4096) == 4096
        assert await array.read(off, 4096) == b"y" * 4096
        assert await array.write(100, b"early") == 5
        assert await array.read(100, 5) == b"early"
    finally:
        await array.close()


# ---- finding 7: failure beyond tolerance writes no superblock ----------------------------


async def test_raid0_member_error_writes_nothing_and_reassembles(md_fixture):
    meta, paths = md_fixture("r0-3-c64")
    size = os.path.getsize(paths[1])
    before = superblock_bytes(paths)
    async with open_array(paths) as array:
        os.truncate(paths[1], 1 << 20)  # a transient error: the data area is gone
        with pytest.raises(OSError) as info:
            await array.read(0, array.size)
        assert info.value.errno == errno.EIO
        assert array.status()["state"] == "failed"
    assert superblock_bytes(paths) == before  # md's raid0 writes nothing on error
    os.truncate(paths[1], size)  # the member is back
    async with open_array(paths, readonly=True) as array:
        assert array.size == meta["array_bytes"]


async def test_failure_beyond_tolerance_keeps_member_trusted(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    size = os.path.getsize(paths[0])
    dev = read_superblock(paths[0]).dev_number
    async with open_array(paths) as array:
        written = superblock_bytes(paths)  # after the array went active
        os.truncate(paths[0], 1 << 20)
        with pytest.raises(OSError) as info:
            await array.read(0, array.size)
        assert info.value.errno == errno.EIO
    assert superblock_bytes(paths) == written  # no FAULTY, no clean mark
    assert all(read_superblock(p).dev_roles[dev] != MD_DISK_ROLE_FAULTY for p in paths[1:])
    os.truncate(paths[0], size)
    # dirty and degraded: md needs --force; then it assembles again
    async with open_array(paths, readonly=True, force=True) as array:
        assert array.status()["state"] == "degraded"


# ---- finding 9: remove() waits for requests ----------------------------------------------


async def test_remove_waits_for_requests_before_closing(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    async with open_array(paths) as array:
        await array.fail(2)
        member = next(m["path"] for m in array.status()["members"] if m["state"] == "faulty")
        victim = next(ms.member for ms in array.members if ms.path == member)
        req = await array.lock.acquire(0, 4096, exclusive=False)  # a request in flight
        removed = trio.Event()

        async def remove() -> None:
            await array.remove(2)
            removed.set()

        async with trio.open_nursery() as n:
            n.start_soon(remove)
            with trio.move_on_after(0.5):
                await removed.wait()
            assert not removed.is_set() and not victim.closed
            array.lock.release(req)
        assert removed.is_set() and victim.closed


# ---- finding 8: rebuild start races a member failure -------------------------------------


async def test_failure_while_rebuild_starts_reaches_full_driver(md_fixture, tmp_path,
                                                                monkeypatch):
    """A member failing (in a worker) between the rebuild's copy of the slots and the
    registration of that copy must not stay in the rebuild's full driver."""
    _, paths = md_fixture("r6-5-left-symmetric-c64")
    new = blank(tmp_path / "new.img", 4 << 20)
    array = await assemble([str(p) for p in paths])
    try:
        await array.fail(1)
        await array.remove(1)
        victim = array.role_holders()[3].member
        thread: list[threading.Thread] = []
        seen: list[object] = []
        real_slot, real_rv = background_mod.Slot, background_mod.RecoveringVolume

        def slot(member, offset):
            if member.path == str(new) and not thread:
                t = threading.Thread(target=array._fail_member, args=(victim, "test"))
                thread.append(t)
                t.start()
                t.join(timeout=0.5)  # fixed engine: blocked on the state lock
            return real_slot(member, offset)

        def recovering(degraded, full, role, border):
            thread[0].join()
            seen.append(full.slots[3])
            return real_rv(degraded, full, role, border)

        monkeypatch.setattr(background_mod, "Slot", slot)
        monkeypatch.setattr(background_mod, "RecoveringVolume", recovering)
        await array.add(str(new))  # no nursery: the rebuild runs here
        assert seen == [None]
        assert len(array._slot_lists) == 1  # the rebuild's list was handed back
    finally:
        await array.close()


# ---- the state lock is never held across I/O ---------------------------------------------


async def test_loop_never_blocks_on_a_failure_commit(md_fixture, monkeypatch):
    """While a worker commits a member failure (fsyncs), the trio thread stays free: a
    remove() started meanwhile waits asynchronously, it does not block the event loop
    on a threading lock the worker holds across the fsyncs."""
    _, paths = md_fixture("r6-5-left-symmetric-c64")
    gate, entered = threading.Event(), threading.Event()
    real_fsync = Member.fsync
    gating = False

    def fsync(self):
        if gating:
            entered.set()
            gate.wait(10)
        real_fsync(self)

    monkeypatch.setattr(Member, "fsync", fsync)
    async with open_array(paths) as array:
        await array.fail(4)
        gating = True
        timer = threading.Timer(1.0, gate.set)  # unblocks even a stalled loop
        timer.start()
        gaps: list[float] = []
        try:
            async with trio.open_nursery() as n:
                n.start_soon(array.fail, 3)
                await trio.to_thread.run_sync(entered.wait, 10)
                n.start_soon(array.remove, 4)

                async def ticker() -> None:
                    last = time.monotonic()
                    while not gate.is_set():
                        await trio.sleep(0.01)
                        now = time.monotonic()
                        gaps.append(now - last)
                        last = now

                n.start_soon(ticker)
        finally:
            gating = False
            gate.set()
            timer.cancel()
        assert gaps and max(gaps) < 0.5
        states = {m["role"]: m["state"] for m in array.status()["members"]}
        assert states[3] == "faulty" and states[4] == "missing"


# ---- status and slot lists ---------------------------------------------------------------


async def test_status_lists_a_failed_role_once(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    async with open_array(paths) as array:
        await array.fail(2)
        members = array.status()["members"]
        assert [m["role"] for m in members] == [0, 1, 2, 3]
        assert members[2] == {"role": 2, "path": str(paths[2]), "state": "faulty"}
        await array.remove(2)
        assert array.status()["members"][2] == {"role": 2, "path": None, "state": "missing"}


async def test_slot_lists_unregister(md_fixture, tmp_path):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    async with open_array(paths) as array:
        for i in range(2):
            await array.fail(1)
            await array.remove(1)
            new = blank(tmp_path / f"new{i}.img", 4 << 20)
            await array.add(str(new))
            await array.wait_idle()
            paths[1] = new
        assert len(array._slot_lists) == 1
        assert array._slot_lists[0] is array.slots
        drv = array.make_driver(array.geometry, list(array.slots))
        assert len(array._slot_lists) == 2
        array.unregister_slots(drv.slots)
        assert len(array._slot_lists) == 1


async def test_live_reshape_hands_back_its_slot_lists(tmp_path):
    from test_migration_kit import KIB, make_array

    from fuseraid.layout import Geometry
    from fuseraid.migration.live import start_live_reshape
    from fuseraid.migration.plan import Request

    old = Geometry(5, 4, 2, 16 * KIB, 256 * KIB)
    paths, _, content = make_array(tmp_path, old, member_bytes=768 * KIB,
                                   data_offset=256 * KIB)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, Request(layout=0, chunk=8 * KIB))
        assert r is not None
        with trio.fail_after(60):
            await array.reshape_control.finished.wait()
        assert array.reshape is None
        assert len(array._slot_lists) == 1 and array._slot_lists[0] is array.slots
        assert await array.read(0, len(content)) == content


# ---- finding 3: a dirty array resumed mid-reshape -----------------------------------------


async def test_dirty_reshape_stays_dirty_until_resynced(md_fixture):
    meta, paths = md_fixture(PARKED)
    # mid-reshape members: the migration's entry points (the engine alone refuses them)
    from fuseraid.migration import assemble, open_array
    paths = [str(p) for p in paths]
    make_dirty(paths)
    array = await assemble(paths)
    assert array.reshape is not None and array.resync_row == 0
    await array.close()  # the reshape and the resync never ran: not clean
    assert {read_superblock(p).resync_offset for p in paths} != {MAX_SECTOR}
    async with open_array(paths) as array:
        with trio.fail_after(60):
            while array.reshape_control is None:
                await trio.sleep(0.01)
            await array.reshape_control.finished.wait()
            await array.wait_idle()
        assert array.reshape is None and array.status()["in_sync"]
        assert await array.check() == 0
        data = await array.read(0, array.size)
        assert hashlib.sha256(data).hexdigest() == meta["resume"]["array_sha256_after"]
    assert {read_superblock(p).resync_offset for p in paths} == {MAX_SECTOR}


async def test_resumed_reshape_member_failure_uses_array_policy(md_fixture):
    """Finding 1 (engine side): the resumed reshape's drivers fail members through the
    array: after fail(), nothing is written to the failed member any more."""
    from fuseraid.migration import assemble  # mid-reshape: the migration's entry point
    _, paths = md_fixture(PARKED)
    paths = [str(p) for p in paths]
    array = await assemble(paths)
    try:
        await array.fail(1)
        before = hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest()
        await array.write(0, b"z" * (1 << 20))
        assert hashlib.sha256(Path(paths[1]).read_bytes()).hexdigest() == before
        assert await array.read(0, 1 << 20) == b"z" * (1 << 20)
    finally:
        array.abandon()
