"""The engine's interval lock: sharing, exclusion, fairness and cancellation."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from fuseraid.engine.locks import WHOLE, IntervalLock


def _no_conflicts(lock: IntervalLock) -> bool:
    held = lock.held()
    for i, (s1, e1, x1) in enumerate(held):
        for s2, e2, x2 in held[i + 1 :]:
            if s1 < e2 and s2 < e1 and (x1 or x2) and s1 != e1 and s2 != e2:
                return False
    return True


async def test_readers_share_writers_exclude():
    lock = IntervalLock()
    r1 = await lock.acquire(0, 100, exclusive=False)
    r2 = await lock.acquire(50, 150, exclusive=False)
    assert len(lock.held()) == 2
    got = []

    async def writer():
        async with lock.exclusive(90, 95):
            got.append("w")

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [] and lock.waiting() == 1
        lock.release(r1)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []  # r2 still overlaps
        lock.release(r2)
    assert got == ["w"] and lock.held() == []


async def test_disjoint_writers_run_together():
    lock = IntervalLock()
    a = await lock.acquire(0, 10, exclusive=True)
    b = await lock.acquire(10, 20, exclusive=True)  # half-open: touching is not overlapping
    assert len(lock.held()) == 2
    lock.release(a)
    lock.release(b)


async def test_writer_not_starved_by_reader_stream():
    lock = IntervalLock()
    first = await lock.acquire(0, 100, exclusive=False)
    order: list[str] = []

    async def writer():
        async with lock.exclusive(0, 100):
            order.append("w")

    async def reader(i: int):
        async with lock.shared(10, 20):
            order.append(f"r{i}")

    async with trio.open_nursery() as n:
        n.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(5):
            n.start_soon(reader, i)
        await trio.testing.wait_all_tasks_blocked()
        # Readers that came after the queued writer wait behind it.
        assert order == [] and lock.waiting() == 6
        lock.release(first)
    assert order[0] == "w" and sorted(order[1:]) == [f"r{i}" for i in range(5)]


async def test_cancelled_waiter_leaves_queue_and_unblocks_followers():
    lock = IntervalLock()
    held = await lock.acquire(0, 10, exclusive=False)
    done: list[str] = []

    async def writer(scope_box: list):
        with trio.CancelScope() as scope:
            scope_box.append(scope)
            async with lock.exclusive(0, 10):
                done.append("w")

    async def reader():
        async with lock.shared(5, 6):
            done.append("r")

    box: list = []
    async with trio.open_nursery() as n:
        n.start_soon(writer, box)
        await trio.testing.wait_all_tasks_blocked()
        n.start_soon(reader)
        await trio.testing.wait_all_tasks_blocked()
        assert done == []  # reader queued behind the writer
        box[0].cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert done == ["r"]  # the writer left; the reader shares with `held`
    lock.release(held)
    assert lock.held() == [] and lock.waiting() == 0


async def test_cancel_right_after_grant_leaves_lock_clean():
    lock = IntervalLock()
    held = await lock.acquire(0, 10, exclusive=True)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as n:

            async def waiter():
                req = await lock.acquire(0, 10, exclusive=True)
                try:
                    await trio.sleep_forever()
                finally:
                    lock.release(req)

            n.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            lock.release(held)  # grants the waiter ...
            scope.cancel()  # ... which is cancelled before it has run
    assert lock.held() == [] and lock.waiting() == 0
    # The lock is usable again.
    async with lock.exclusive(0, WHOLE):
        pass


def test_bad_range_refused():
    lock = IntervalLock()

    async def go():
        await lock.acquire(10, 5, exclusive=True)

    with pytest.raises(ValueError):
        trio.run(go)


@pytest.mark.parametrize("seed", range(8))
async def test_random_workload_never_grants_conflicts(seed: int):
    rng = random.Random(seed)
    lock = IntervalLock()
    # Per byte: number of readers and writers inside, checked on every grant.
    inside = [[0, 0] for _ in range(64)]
    completed = 0

    async def worker():
        nonlocal completed
        for _ in range(30):
            s = rng.randrange(64)
            e = rng.randrange(s, 65)
            excl = rng.random() < 0.4
            ctx = lock.exclusive(s, e) if excl else lock.shared(s, e)
            async with ctx:
                assert _no_conflicts(lock)
                for b in range(s, e):
                    if excl:
                        assert inside[b] == [0, 0]
                    else:
                        assert inside[b][1] == 0
                    inside[b][1 if excl else 0] += 1
                for _ in range(rng.randrange(3)):
                    await trio.lowlevel.checkpoint()
                for b in range(s, e):
                    inside[b][1 if excl else 0] -= 1
            completed += 1

    async with trio.open_nursery() as n:
        for _ in range(8):
            n.start_soon(worker)
    assert completed == 240 and lock.held() == [] and lock.waiting() == 0


async def test_try_acquire_grants_only_what_acquire_would_grant_at_once():
    lock = IntervalLock()
    a = lock.try_acquire(0, 100, exclusive=False)
    assert a is not None
    assert lock.try_acquire(50, 60, exclusive=False) is not None  # readers share
    assert lock.try_acquire(90, 120, exclusive=True) is None  # overlaps a reader
    assert lock.try_acquire(100, 200, exclusive=True) is not None  # disjoint

    # a queued writer keeps later readers of its range out (FIFO), as acquire() does
    async def writer(task_status=trio.TASK_STATUS_IGNORED):
        task_status.started()
        req = await lock.acquire(0, 10, exclusive=True)
        lock.release(req)

    async with trio.open_nursery() as n:
        await n.start(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert lock.waiting() == 1
        assert lock.try_acquire(5, 6, exclusive=False) is None
        lock.release(a)  # the writer runs once the readers of [0, 10) are gone
    assert lock.waiting() == 0
