"""The worker pool and the write ring leave trio's instruments after an idle spell and
come back when used (engine/workers.py, engine/ring.py): nothing queued is ever left
unsent, no finished job is left unwoken, whether it came before, during or after the
spell."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest
import trio

from fuseraid.engine import ring as ring_mod
from fuseraid.engine import workers as workers_mod
from fuseraid.engine.assemble import open_array
from fuseraid.engine.create import create
from fuseraid.engine.ring import WriteRing
from fuseraid.engine.workers import WorkerPool
from fuseraid.member import uring
from tests.test_inline_requests import drop_cache

MIB = 1 << 20


def installed(obj: object) -> bool:
    """Is obj one of the running trio loop's instruments? (trio has no public query.)"""
    from trio._core._run import GLOBAL_RUN_CONTEXT

    return obj in GLOBAL_RUN_CONTEXT.runner.instruments.data["_all"]


async def idle_passes(n: int) -> None:
    for _ in range(n):
        await trio.sleep(0)  # one scheduler pass each (this task is the only one runnable)


async def write(ring: WriteRing, items: list[tuple[int, int, bytes]]) -> list[int]:
    """ring.write, failing instead of hanging when the writes were never submitted (a
    task waiting for the ring cannot be cancelled): after 5 s, submit them ourselves."""
    got: list[list[int]] = []
    rescued = False
    async with trio.open_nursery() as n:
        async def one() -> None:
            got.append(await ring.write(items))
            n.cancel_scope.cancel()

        n.start_soon(one)
        await trio.sleep(5)
        rescued = True
        while True:  # the rescue: the test fails below, but ends
            ring._submit()
            await trio.sleep(0.05)
    assert not rescued, "writes queued after an idle spell were never submitted"
    return got[0]


@pytest.fixture(autouse=True)
def _unhook_on(monkeypatch: pytest.MonkeyPatch) -> None:
    # the idle rule on, whatever FUSERAID_UNHOOK the test run was started with
    monkeypatch.setattr(ring_mod, "UNHOOK", True)
    monkeypatch.setattr(workers_mod, "UNHOOK", True)


async def test_ring_leaves_when_idle_and_writes_after_still_complete(tmp_path: Path) -> None:
    if not uring.available():
        pytest.skip("built without liburing")
    path = tmp_path / "f"
    path.write_bytes(bytes(MIB))
    fd = os.open(path, os.O_RDWR)
    blocks = [random.Random(i).randbytes(4096) for i in range(8)]
    try:
        ring = WriteRing.open(entries=8)
        assert ring is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(ring.run)
            assert not installed(ring)  # no write yet: no hook on every pass
            assert await write(ring, [(fd, 0, blocks[0])]) == [4096]
            assert installed(ring)
            await idle_passes(ring_mod.IDLE_PASSES + 2)
            assert not installed(ring)
            # after the spell: the write installs the hook again, and is submitted
            assert await write(ring, [(fd, 4096, blocks[1])]) == [4096]
            assert installed(ring)
            # several spells, with writes from several tasks in one pass each time
            for spell in range(3):
                await idle_passes(ring_mod.IDLE_PASSES + 2)
                assert not installed(ring)
                async with trio.open_nursery() as writers:
                    for i in (0, 1):
                        k = 2 + i + 2 * spell
                        writers.start_soon(write, ring, [(fd, k * 4096, blocks[k])])
            ring.stop()
        assert not installed(ring)
        got = path.read_bytes()
        for i, b in enumerate(blocks):
            assert got[i * 4096 : (i + 1) * 4096] == b
    finally:
        os.close(fd)


async def test_ring_refills_from_the_backlog_after_leaving(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    """More writes than the ring holds, the hook leaving while they are in flight (one
    idle pass is enough here): the reaper queues the backlog and installs it again."""
    if not uring.available():
        pytest.skip("built without liburing")
    monkeypatch.setattr(ring_mod, "IDLE_PASSES", 1)
    path = tmp_path / "f"
    path.write_bytes(bytes(MIB))
    fd = os.open(path, os.O_RDWR)
    blocks = [random.Random(i).randbytes(4096) for i in range(40)]
    try:
        ring = WriteRing.open(entries=4)
        assert ring is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(ring.run)
            res = await write(ring, [(fd, i * 4096, b) for i, b in enumerate(blocks)])
            assert res == [4096] * len(blocks)
            ring.stop()
        assert path.read_bytes()[: 40 * 4096] == b"".join(blocks)
    finally:
        os.close(fd)


async def test_pool_leaves_when_idle_and_jobs_still_wake() -> None:
    pool = WorkerPool(1)
    pool.start()
    try:
        assert not installed(pool)
        with trio.fail_after(5):
            assert await pool.run(lambda: 7) == 7
        assert installed(pool)
        await idle_passes(workers_mod.IDLE_PASSES + 2)
        assert not installed(pool)
        with trio.fail_after(5):  # a job after the spell is handed over and comes back
            assert await pool.run(lambda: 8) == 8

        # a job that finishes after the hook left (mid-job): its worker must wake us
        started, release = threading.Event(), threading.Event()

        def slow() -> str:
            started.set()
            release.wait(10)
            return "done"

        got: list[str] = []
        async with trio.open_nursery() as n:
            async def caller() -> None:
                got.append(await pool.run(slow))

            n.start_soon(caller)
            with trio.fail_after(5):
                while not started.is_set():
                    await trio.sleep(0)
            await idle_passes(workers_mod.IDLE_PASSES + 2)
            assert not installed(pool)
            release.set()
            with trio.move_on_after(5):
                while not got:
                    await trio.sleep(0.01)  # blocks in epoll: only the signal wakes us
            woken = bool(got)
            pool._drain()  # the rescue if it was not (the caller cannot be cancelled)
        assert woken, "a job that finished after the hook left never woke its caller"
        assert got == ["done"]
    finally:
        pool.stop()
        pool.join()
    assert not installed(pool)


async def test_array_writes_after_idle_spells(tmp_path: Path) -> None:
    """Through the Array: small writes by the ring, and small writes that fall back to
    the pool (member caches dropped), each time after the hooks left, all complete and
    read back."""
    paths = []
    for i in range(3):
        p = tmp_path / f"m{i}"
        p.write_bytes(bytes(8 * MIB))  # not sparse: a dropped page must be read again
        paths.append(str(p))
    await create(paths, level=5, raid_disks=3, chunk=64 * 1024, assume_clean=True)
    rnd = random.Random(3)
    async with open_array(paths) as array:
        assert array.ring is not None or not uring.available()
        assert array.workers is not None
        want: dict[int, bytes] = {}
        for spell in range(4):
            await idle_passes(max(ring_mod.IDLE_PASSES, workers_mod.IDLE_PASSES) + 2)
            for hooked in (array.ring, array.workers):
                assert hooked is None or not installed(hooked)
            if spell % 2:
                for p in paths:
                    await trio.to_thread.run_sync(drop_cache, p)
            jobs = array.workers.jobs
            with trio.fail_after(10):
                async with trio.open_nursery() as n:
                    for _ in range(8):
                        off = rnd.randrange(0, 2 * MIB // 4096) * 4096
                        want[off] = rnd.randbytes(4096)
                        n.start_soon(array.write, off, want[off])
            if spell % 2:
                assert array.workers.jobs > jobs  # some went to the pool after its spell
        for off, data in want.items():
            assert await array.read(off, len(data)) == data
