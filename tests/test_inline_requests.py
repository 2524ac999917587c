"""Small requests on the trio thread: non-blocking sections (member/nowait.py), the
Array's inline path with its fall-back to a worker, and member writes through io_uring
(engine/ring.py) including a write the kernel refuses."""

from __future__ import annotations

import errno
import os
import random
import subprocess
from pathlib import Path

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuseraid.engine.assemble import open_array
from fuseraid.engine.create import create
from fuseraid.engine.levels import Slot, make_driver
from fuseraid.engine.ring import WriteRing
from fuseraid.layout import Geometry
from fuseraid.member import nowait, uring
from fuseraid.member.device import Member

MIB = 1 << 20


def blank(path: Path, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return str(path)


def drop_cache(path: str) -> None:
    """Evict a file's pages, so that the next read has to go to the device."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# ---- sections ----------------------------------------------------------------------------


def test_section_reads_cached_and_refuses_the_rest(tmp_path: Path) -> None:
    path = blank(tmp_path / "m", 4 * MIB)
    content = random.Random(1).randbytes(4 * MIB)
    Path(path).write_bytes(content)
    with Member(path) as m:
        buf = bytearray(4096)
        m.preadinto(buf, 8192)  # now cached
        with nowait.section():
            got = bytearray(4096)
            m.preadinto(got, 8192)
            assert got == content[8192:12288]
            for call in (lambda: m.pwrite(0, b"x" * 512), lambda: m.pwritev([b"x" * 512], 0),
                         m.fsync, lambda: m.pread(0, 512)):
                with pytest.raises(nowait.WouldBlock):
                    call()
        drop_cache(path)
        with nowait.section(), pytest.raises(nowait.WouldBlock):
            m.preadv([bytearray(4096), bytearray(4096)], 3 * MIB)
        # outside a section the same read blocks and succeeds
        two = [bytearray(4096), bytearray(4096)]
        m.preadv(two, 3 * MIB)
        assert b"".join(two) == content[3 * MIB : 3 * MIB + 8192]
    assert Path(path).read_bytes() == content  # nothing was written by the refused calls


@pytest.mark.parametrize("level,disks", [(5, 4), (6, 5), (1, 2), (10, 4)])
def test_section_defers_driver_writes(tmp_path: Path, level: int, disks: int) -> None:
    chunk = 64 * 1024
    layout = {5: 2, 6: 2, 1: 0, 10: 0x102}[level]
    g = Geometry(level, disks, layout, 0 if level == 1 else chunk, chunk * 16)
    paths = [blank(tmp_path / f"d{i}", chunk * 16) for i in range(disks)]
    slots = [Slot(Member(p), 0) for p in paths]
    drv = make_driver(g, slots)
    drv.write(0, random.Random(2).randbytes(drv.size))
    before = [Path(p).read_bytes() for p in paths]
    new = random.Random(3).randbytes(4096)
    with nowait.section() as sec:
        drv.write(12288, new)
        with pytest.raises(nowait.WouldBlock):  # its own bytes, not yet written
            drv.read(12288, 4096)
    assert [Path(p).read_bytes() for p in paths] == before  # deferred, not done
    assert sec.deferred
    for owner, writes in sec.deferred:
        owner.write_blocks(writes)
    assert drv.read(12288, 4096) == new
    assert drv.scrub(0, drv.rows) == 0
    for s in slots:
        s.member.close()


# ---- the Array's inline path ------------------------------------------------------------

GEOMETRIES = [("raid5", 4, None), ("raid6", 5, None), ("raid1", 2, None),
              ("raid10", 4, "n2"), ("raid0", 3, None)]


async def _make(tmp_path: Path, level: str, disks: int, layout: str | None) -> list[str]:
    paths = [blank(tmp_path / f"m{i}", 8 * MIB) for i in range(disks)]
    await create(paths, level=level, raid_disks=disks, chunk=64 * 1024, layout=layout,
                 assume_clean=True)
    return paths


@pytest.mark.parametrize("use_ring", [True, False], ids=["uring", "pool"])
@pytest.mark.parametrize("level,disks,layout", GEOMETRIES)
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
@given(seed=st.integers(0, 2**32 - 1))
def test_small_requests_match_the_model(tmp_path_factory, monkeypatch, use_ring: bool,
                                        level: str, disks: int, layout: str | None,
                                        seed: int) -> None:
    """Random small reads and writes, with member caches dropped at random so requests
    take both the inline path and the fall-back, against a bytearray; parity scrubs 0."""
    monkeypatch.setenv("FUSERAID_URING", "1" if use_ring else "0")
    if use_ring and not uring.available():
        pytest.skip("built without liburing")
    tmp = tmp_path_factory.mktemp("inline")
    rnd = random.Random(seed)

    async def main() -> None:
        paths = await _make(tmp, level, disks, layout)
        async with open_array(paths) as array:
            assert (array.ring is not None) == use_ring
            size = array.size
            model = bytearray(size)
            for i in range(60):
                n = rnd.choice([512, 4096, 8192, 12288, 65536 - 512])
                off = rnd.randrange(0, (size - n) // 512) * 512
                if rnd.random() < 0.15:
                    drop_cache(rnd.choice(paths))
                if rnd.random() < 0.6:
                    data = rnd.randbytes(n)
                    await array.write(off, data)
                    model[off : off + n] = data
                else:
                    assert await array.read(off, n) == bytes(model[off : off + n]), i
            assert await array.read(0, size) == bytes(model)
            served, fell_back = array.inline_counts[1], array.inline_counts[0]
            assert served > 0  # the inline path really ran
            if array.redundant:
                assert await array.check() == 0
            del fell_back

    trio.run(main)


@pytest.mark.parametrize("fast", [True, False], ids=["read_now", "section"])
async def test_cache_misses_fall_back(tmp_path: Path, fast: bool) -> None:
    paths = await _make(tmp_path, "raid5", 3, None)
    async with open_array(paths) as array:
        array.dispatch.fast = fast
        data = random.Random(4).randbytes(4096)
        await array.write(MIB, data)
        await array.flush()
        for p in paths:
            drop_cache(p)
        before = list(array.dispatch.fast_counts if fast else array.dispatch.inline_counts)
        assert await array.read(MIB, 4096) == data
        # the first non-blocking attempt is refused (it only starts the kernel's
        # readahead; a later attempt may then find the page already there)
        after = array.dispatch.fast_counts if fast else array.dispatch.inline_counts
        assert after[0] == before[0] + 1
        assert after[1] == before[1]


@pytest.mark.parametrize("level", ["raid5", "raid1"])  # the section path; write_now's
async def test_ring_write_refused_by_the_kernel_fails_the_member(tmp_path: Path,
                                                                 level: str) -> None:
    """A member that refuses writes (immutable file): the write through io_uring fails,
    goes again through the driver, the policy fails the member, and the array goes on
    degraded with the new data readable."""
    if not uring.available():
        pytest.skip("built without liburing")
    paths = await _make(tmp_path, level, 3, None)
    if subprocess.run(["chattr", "-i", paths[1]], capture_output=True).returncode:
        pytest.skip("no chattr here")
    async with open_array(paths) as array:
        assert array.ring is not None
        data = random.Random(5).randbytes(4096)
        try:
            subprocess.run(["chattr", "+i", paths[1]], check=True)
            for off in range(0, 6 * 64 * 1024, 64 * 1024):  # some land on member 1
                await array.write(off, data)
        finally:
            subprocess.run(["chattr", "-i", paths[1]], check=True)
        assert array.ring.writes > 0  # the writes went through io_uring first
        assert array.status()["state"] == "degraded"
        assert array.missing_roles() == [1]
        for off in range(0, 6 * 64 * 1024, 64 * 1024):
            assert await array.read(off, 4096) == data


async def test_ring_stop_waits_for_writes_in_flight(tmp_path: Path) -> None:
    if not uring.available():
        pytest.skip("built without liburing")
    path = blank(tmp_path / "f", 16 * MIB)
    fd = os.open(path, os.O_RDWR)
    try:
        ring = WriteRing.open(entries=8)
        assert ring is not None
        blocks = [random.Random(i).randbytes(4096) for i in range(64)]
        results: list[list[int]] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(ring.run)

            async def writer(i: int) -> None:
                results.append(await ring.write([(fd, i * 4096, blocks[i])]))

            async with trio.open_nursery() as writers:
                for i in range(64):  # more than the ring holds: some wait in the backlog
                    writers.start_soon(writer, i)
                while ring.writes < 64:
                    await trio.sleep(0)
                ring.stop()  # writes already taken still complete
        assert ring.done.is_set()
        assert all(r == [4096] for r in results)
        got = Path(path).read_bytes()
        for i in range(len(results)):
            assert got[i * 4096 : (i + 1) * 4096] in blocks
    finally:
        os.close(fd)


def test_ring_reports_errors_per_write(tmp_path: Path) -> None:
    if not uring.available():
        pytest.skip("built without liburing")
    path = blank(tmp_path / "f", MIB)
    ro = os.open(path, os.O_RDONLY)
    rw = os.open(path, os.O_RDWR)

    async def main() -> list[int]:
        ring = WriteRing.open()
        assert ring is not None
        async with trio.open_nursery() as nursery:
            await nursery.start(ring.run)
            res = await ring.write([(rw, 0, b"a" * 512), (ro, 512, b"b" * 512)])
            ring.stop()
        return res

    try:
        assert trio.run(main) == [512, -errno.EBADF]
    finally:
        os.close(ro)
        os.close(rw)
