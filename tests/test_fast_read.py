"""The small requests' fast paths (Driver.read_now and Dispatcher.read_now for reads,
Driver.write_now for writes that need no member read): against the model for random
geometries, offsets and degraded arrays, and the interval lock's rule that a read of a
range a write holds or waits for waits for that write."""

from __future__ import annotations

import random
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuseraid.engine.assemble import open_array
from fuseraid.engine.create import create
from fuseraid.layout import Geometry, encode_raid10
from tests.model import payload
from tests.test_inline_requests import drop_cache
from tests.test_levels import Rig, geometries, removable

MIB = 1 << 20


def _expect_fast(rig: Rig, off: int, n: int) -> bool:
    """Must read_now serve this read? Inside one chunk for the striped levels, one
    extent of the layout with a live readable copy (what the ordinary read would take
    without reconstructing)."""
    drv = rig.driver
    c = drv.geometry.chunk
    if drv.level in (0, 4, 5, 6) and off % c + n > c:
        return False  # striped levels map in integers inside one chunk only
    exts = drv._map(off, n) if hasattr(drv, "_map") else drv.layout.map(off, n)
    if len(exts) != 1:
        return False
    if hasattr(drv, "_readable"):
        return bool(drv._readable(exts[0]))
    role = exts[0].copies[0][0]
    return drv.slots[role] is not None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(g=geometries(), data=st.data())
def test_read_now_matches_the_model(g: Geometry, data) -> None:
    """read_now is the model's bytes whenever it answers, answers whenever the read is
    one live member's run (healthy and degraded), and never when it is not."""
    offsets = data.draw(st.lists(st.sampled_from([0, 4096, 12288]),
                                 min_size=g.raid_disks, max_size=g.raid_disks))
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        rig = Rig(g, Path(tmp), offsets, stack)
        drv = rig.driver
        content = payload(data.draw(st.integers(0, 1 << 30)), drv.size)
        drv.write(0, content)
        rig.model.write(0, content)
        degraded = data.draw(st.booleans())
        if degraded and g.level != 0:
            for role in removable(g, data.draw):
                rig.slots[role] = None
        for _ in range(12):
            n = data.draw(st.sampled_from([512, 4096, 8192, 1, 3000, 65536 - 512]))
            n = min(n, drv.size)
            off = data.draw(st.integers(0, drv.size - n))
            if data.draw(st.booleans()):
                off = off // 4096 * 4096 if off // 4096 * 4096 + n <= drv.size else off
            got = drv.read_now(off, n)
            if got is not None:
                assert got == rig.model.read(off, n)
                assert isinstance(got, bytes)
            assert (got is not None) == _expect_fast(rig, off, n), (off, n)
            assert drv.read(off, n) == rig.model.read(off, n)  # the ordinary path agrees
        _every_chunk(rig)


def _every_chunk(rig: Rig) -> None:
    """read_now of every chunk (and a piece of it) against the model and _expect_fast."""
    drv = rig.driver
    step = drv.geometry.chunk or 4096
    for off in range(0, drv.size, step):  # every zone and rotation
        for o, n in ((off, min(step, drv.size - off)), (off + 512, 1024)):
            if o + n > drv.size:
                continue
            got = drv.read_now(o, n)
            assert (got is not None) == _expect_fast(rig, o, n), (o, n)
            assert got is None or got == rig.model.read(o, n), (o, n)
    assert drv.read_now(drv.size, 0) is None
    assert drv.read_now(drv.size - 1, 2) is None  # past the end: the ordinary path's
    # write_now's member writes, issued as the inline path issues deferred ones, leave
    # what the ordinary write leaves
    for off in range(0, drv.size, step):
        for o, n in ((off, min(step, drv.size - off)), (off + 512, 1024)):
            if o + n > drv.size:
                continue
            data = payload(o + n, n)
            plan = drv.write_now(o, data)
            fast = drv.level in (0, 1, 10) and _expect_fast(rig, o, n)
            assert (plan is not None) == fast, (o, n)
            if plan is not None:
                drv.write_blocks(plan)
            else:
                drv.write(o, data)
            rig.model.write(o, data)
    assert drv.read(0, drv.size) == rig.model.data
    if drv.level != 0 and not drv.missing():
        assert drv.scrub(0, drv.rows) == 0  # every copy and parity agrees


C = 16384
ZONED = (4 * C + 512, 2 * C, 3 * C + 512, 3 * C)


EVERY_RULE = [
    Geometry(0, 4, 1, C, ZONED[0], ZONED),  # raid0 zones, original layout
    Geometry(0, 4, 2, C, ZONED[0], ZONED),  # alternate: a later zone picks differently
    Geometry(0, 3, 2, C, C, (C, 2 * C, 2 * C)),
    *(Geometry(5, 4, layout, C, 5 * C) for layout in range(6)),
    Geometry(4, 3, 0, C, 5 * C),
    *(Geometry(6, 5, layout, C, 5 * C) for layout in (2, 8, 9, 10, 18)),
    Geometry(10, 3, encode_raid10(2), C, 6 * C),
    Geometry(10, 4, encode_raid10(1, 2), C, 6 * C),
    Geometry(10, 4, encode_raid10(1, 2, offset=True), C, 6 * C),
    Geometry(1, 3, 0, 0, 5 * C),
]


@pytest.mark.parametrize("g,missing", [
    *((g, None) for g in EVERY_RULE),
    *((g, role) for g in EVERY_RULE if g.level != 0 for role in (0, 1)),  # degraded
], ids=repr)
def test_read_now_every_chunk(tmp_path: Path, g: Geometry, missing: int | None) -> None:
    """The same, for geometries chosen to hit every mapping rule, healthy and degraded."""
    with ExitStack() as stack:
        rig = Rig(g, tmp_path, [4096] * g.raid_disks, stack)
        content = payload(11, rig.driver.size)
        rig.driver.write(0, content)
        rig.model.write(0, content)
        if missing is not None:
            rig.slots[missing] = None
        _every_chunk(rig)


def test_read_now_refuses_uncached_bytes(tmp_path: Path) -> None:
    g = Geometry(0, 2, 0, 4096, 4096 * 64)
    with ExitStack() as stack:
        rig = Rig(g, tmp_path, [0, 0], stack)
        content = payload(7, rig.driver.size)
        rig.driver.write(0, content)
        assert rig.driver.read_now(8192, 4096) == content[8192:12288]
        for slot in rig.slots:
            assert slot is not None
            slot.member.fsync()
            drop_cache(slot.member.path)  # type: ignore[attr-defined]
        assert rig.driver.read_now(40960, 4096) is None  # would wait for the disk


# ---- through the Array ---------------------------------------------------------------

async def _array(tmp: Path, level: str, disks: int) -> list[str]:
    paths = []
    for i in range(disks):
        p = tmp / f"m{i}"
        with open(p, "wb") as f:
            f.truncate(8 * MIB)
        paths.append(str(p))
    await create(paths, level=level, raid_disks=disks, chunk=64 * 1024, assume_clean=True)
    return paths


@pytest.mark.parametrize("level,disks", [("raid0", 3), ("raid5", 4), ("raid6", 5),
                                         ("raid1", 2), ("raid10", 4)])
async def test_array_reads_degraded_match_the_model(tmp_path: Path, level: str,
                                                    disks: int) -> None:
    """Random reads and writes; then a member fails (not raid0): reads of its chunks
    fall through to the ordinary path (parity levels reconstruct them; mirrors read
    another copy, still fast), the rest stay fast."""
    paths = await _array(tmp_path, level, disks)
    rnd = random.Random(level)
    async with open_array(paths) as array:
        size = array.size
        model = bytearray(rnd.randbytes(size))
        await array.write(0, bytes(model))
        counts = array.dispatch.fast_counts

        async def rounds(k: int) -> None:
            for _ in range(k):
                n = rnd.choice([512, 4096, 8192, 4096 + 512])
                off = rnd.randrange(0, size - n)
                if rnd.random() < 0.3:
                    data = rnd.randbytes(n)
                    await array.write(off, data)
                    model[off : off + n] = data
                else:
                    assert await array.read(off, n) == bytes(model[off : off + n])

        await rounds(200)
        assert counts[1] > 0  # the fast path served reads
        if level != "raid0":
            await array.fail(1)
            before = list(counts)
            await rounds(200)
            assert counts[1] > before[1]
            if level in ("raid5", "raid6"):  # the lost chunks are reconstructed
                assert counts[0] > before[0]
        assert await array.read(0, size) == bytes(model)


async def test_read_waits_for_a_write_holding_its_range(tmp_path: Path) -> None:
    """What the lock guarantees, kept by the fast path: a read of bytes an exclusive
    holder (a write in flight) covers waits for it and sees the new data; a read that
    arrives while a writer waits for the range queues behind that writer (FIFO)."""
    paths = await _array(tmp_path, "raid0", 2)
    async with open_array(paths) as array:
        old, new = b"o" * 4096, b"n" * 4096
        await array.write(MIB, old)
        assert await array.read(MIB, 4096) == old  # cached, fast
        served = array.dispatch.fast_counts[1]
        got: list[bytes] = []

        async def reader() -> None:
            got.append(await array.read(MIB, 4096))

        # 1. a write holds the range (as while its member writes are in io_uring)
        req = array.lock.try_acquire(MIB, MIB + 4096, exclusive=True)
        assert req is not None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []  # waiting, not served from the page cache
            array.driver.write(MIB, new)  # what the holder does before it lets go
            array.lock.release(req)
        assert got == [new]
        # 2. a reader holds the range shared; a writer queues; a later reader waits too
        shared = array.lock.try_acquire(MIB, MIB + 4096, exclusive=False)
        assert shared is not None
        got.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(array.write, MIB, old)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(reader)
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            array.lock.release(shared)
        assert got == [old]
        assert array.dispatch.fast_counts[1] == served  # none of these were fast
        assert await array.read(MIB, 4096) == old
        assert array.dispatch.fast_counts[1] == served + 1


async def test_fast_read_off_by_switch(tmp_path: Path) -> None:
    paths = await _array(tmp_path, "raid5", 3)
    async with open_array(paths) as array:
        array.dispatch.fast = False
        await array.write(0, b"x" * 4096)
        inline = array.dispatch.inline_counts[1]
        assert await array.read(0, 4096) == b"x" * 4096
        assert array.dispatch.fast_counts == [0, 0]
        assert array.dispatch.inline_counts[1] == inline + 1  # the section path instead


@pytest.mark.parametrize("level,disks", [("raid0", 2), ("raid5", 3), ("raid1", 2)])
async def test_concurrent_reads_never_see_a_mix(tmp_path: Path, level: str,
                                                disks: int) -> None:
    """Writers fill 4 KiB blocks with one repeated byte (its version) while readers
    read the same blocks: every read is one whole version, never older than the last
    write the reader saw complete before it started."""
    paths = await _array(tmp_path, level, disks)
    blocks = [k * 64 * 1024 + 4096 for k in range(6)]  # spread over members and rows
    done = dict.fromkeys(blocks, 0)  # highest version whose write has returned
    rnd = random.Random(3)
    async with open_array(paths) as array:
        for b in blocks:
            await array.write(b, bytes(4096))

        async def writer(b: int) -> None:
            for version in range(1, 40):
                await array.write(b, bytes([version]) * 4096)
                done[b] = version
                await trio.sleep(0)

        async def reader() -> None:
            for _ in range(150):
                b = rnd.choice(blocks)
                floor = done[b]
                got = await array.read(b, 4096)
                assert got == bytes([got[0]]) * 4096, b  # one version, whole
                assert got[0] >= floor  # nothing older than an acknowledged write
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            for b in blocks:
                nursery.start_soon(writer, b)
            for _ in range(4):
                nursery.start_soon(reader)
        assert array.dispatch.fast_counts[1] > 0
