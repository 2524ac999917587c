"""The request worker pool (fuseraid/engine/workers.py) and its ownership by Array:
results and errors come back, jobs are batched, cancellation never abandons a started
job, and the threads live exactly as long as the array's nursery."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from fuseraid.engine.assemble import assemble, open_array
from fuseraid.engine.create import create
from fuseraid.engine.workers import WorkerPool


def _io_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fuseraid-io")]


async def test_results_and_errors():
    pool = WorkerPool(2)
    pool.start()
    try:
        assert await pool.run(lambda a, b: a + b, 2, 3) == 5
        assert await pool.run(threading.get_ident) != threading.get_ident()

        def boom() -> None:
            raise OSError(5, "member broke")

        with pytest.raises(OSError, match="member broke"):
            await pool.run(boom)
    finally:
        pool.stop()
        pool.join()
    assert pool.alive() == 0
    with pytest.raises(RuntimeError):
        await pool.run(int)


async def test_concurrent_jobs_are_batched():
    pool = WorkerPool(2)
    pool.start()
    results: dict[int, int] = {}
    try:

        async def one(i: int) -> None:
            results[i] = await pool.run(lambda x: x * x, i, cost=4096)

        async with trio.open_nursery() as n:
            for i in range(64):
                n.start_soon(one, i)
    finally:
        pool.stop()
        pool.join()
    assert results == {i: i * i for i in range(64)}
    assert pool.jobs == 64
    assert pool.batches < 64  # submitted in one scheduler pass: handed over together


async def test_started_job_completes_despite_cancel():
    """A job a worker has started runs to the end and its caller waits for it."""
    pool = WorkerPool(1)
    pool.start()
    started, release = threading.Event(), threading.Event()
    done: list[str] = []

    def slow_write() -> str:
        started.set()
        release.wait(10)
        done.append("written")
        return "ok"

    got: list[str] = []
    try:
        with trio.CancelScope() as scope:

            async def caller() -> None:
                got.append(await pool.run(slow_write))

            async with trio.open_nursery() as n:
                n.start_soon(caller)
                await trio.to_thread.run_sync(started.wait, 10)
                scope.cancel()  # the caller is cancelled while the worker writes
                await trio.sleep(0.05)
                assert done == [] and got == []  # still waiting, not abandoned
                release.set()
        # the caller saw the result, not Cancelled: the write was reported
        assert done == ["written"] and got == ["ok"]
    finally:
        release.set()
        pool.stop()
        pool.join()


async def test_queued_job_withdrawn_on_cancel():
    """A job still queued (no worker touched it) is dropped on cancellation: it never
    runs, so nothing of it happened."""
    pool = WorkerPool(1)
    pool.start()
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def block() -> None:
        started.set()
        release.wait(10)

    try:
        async with trio.open_nursery() as n:
            n.start_soon(pool.run, block)
            await trio.to_thread.run_sync(started.wait, 10)
            with trio.move_on_after(0.05) as scope:
                await pool.run(ran.append, "queued")
            assert scope.cancelled_caught
            release.set()
        assert await pool.run(len, ran) == 0  # the worker skipped the withdrawn job
        assert ran == []
    finally:
        release.set()
        pool.stop()
        pool.join()


async def test_stop_runs_jobs_queued_before():
    pool = WorkerPool(2)
    pool.start()
    got: list[int] = []

    async def one(i: int) -> None:
        got.append(await pool.run(lambda: i, cost=4096))

    async with trio.open_nursery() as n:
        for i in range(10):
            n.start_soon(one, i)
        await trio.testing.wait_all_tasks_blocked()
        pool.stop()  # submitted, perhaps not yet handed over: they still run
    pool.join()
    assert sorted(got) == list(range(10))
    assert pool.alive() == 0


# ---- ownership by Array ------------------------------------------------------------


@pytest.fixture
def raid5(tmp_path):
    paths = []
    for i in range(3):
        p = tmp_path / f"m{i}.img"
        with open(p, "wb") as f:
            f.truncate(8 << 20)
        paths.append(str(p))
    trio.run(lambda: create(paths, level=5, raid_disks=3, chunk=65536))
    return paths


async def test_array_threads_live_with_open_array(raid5):
    before = len(_io_threads())
    async with open_array(raid5) as array:
        assert array.workers is not None and array.workers.running
        assert len(_io_threads()) == before + array.workers.size
        await array.write(12345, b"x" * 5000)
        assert await array.read(12345, 5000) == b"x" * 5000
        big = bytes(range(256)) * 1024  # 256 KiB: the to_thread path
        await array.write(65536, big)
        assert await array.read(65536, len(big)) == big
    assert len(_io_threads()) == before  # stopped and joined by close()
    async with open_array(raid5) as array:  # data made it to the members
        assert await array.read(12345, 5000) == b"x" * 5000


async def test_array_threads_stop_on_cancellation(raid5):
    before = len(_io_threads())
    with trio.move_on_after(0.3):
        async with open_array(raid5) as array:

            async def hammer(seed: int) -> None:
                off = seed * 4096
                while True:
                    await array.write(off, bytes([seed]) * 4096)
                    assert await array.read(off, 4096) == bytes([seed]) * 4096

            async with trio.open_nursery() as n:
                for i in range(8):
                    n.start_soon(hammer, i)
    assert len(_io_threads()) == before
    async with open_array(raid5) as array:  # every acknowledged write is there, parity ok
        assert await array.check() == 0


async def test_array_abandon_stops_threads(raid5):
    before = len(_io_threads())
    async with trio.open_nursery() as nursery:
        array = await assemble(raid5)
        await array.start(nursery)
        await array.write(0, b"y" * 4096)
        assert len(_io_threads()) > before
        array.abandon()  # also ends the owner task, so the nursery can exit
    assert len(_io_threads()) == before


async def test_array_without_start_uses_to_thread(raid5):
    array = await assemble(raid5, readonly=True)
    try:
        assert array.workers is None
        assert len(await array.read(0, 4096)) == 4096
    finally:
        await array.close()
