"""Helpers shared by the reshape tests (no tests of its own beyond a self-check): build a
small md array in member files with known content, read an array back from its files."""

from __future__ import annotations

import os
import random
import secrets
import time
from pathlib import Path

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration.checkpoint import geometry_of
from fuseraid.migration.resume import open_members
from fuseraid.superblock.codec import Superblock, read_superblock, write_superblock

KIB, MIB = 1024, 1 << 20


def make_array(
    tmp: Path, g: Geometry, *, member_bytes: int, data_offset: int, seed: int = 1,
    extra: int = 0,
) -> tuple[list[Path], list[Path], bytes]:
    """Members (role order) of a clean md array of geometry g filled with random content
    through the real driver, plus `extra` blank member files; returns (members, extra
    files, content)."""
    tmp.mkdir(parents=True, exist_ok=True)
    uuid, ctime = secrets.token_bytes(16), int(time.time())
    paths = []
    for role in range(g.raid_disks):
        p = tmp / f"d{role}.img"
        with open(p, "wb") as f:
            f.truncate(member_bytes)
        sb = Superblock.new(level=g.level, raid_disks=g.raid_disks, role=role,
                            member_bytes=member_bytes, dev_size=0 if g.level == 0 else g.dev_size,
                            chunk=g.chunk, layout=g.layout, data_offset=data_offset,
                            set_uuid=uuid, ctime=ctime, name="t")
        write_superblock(p, sb)
        paths.append(p)
    extras = []
    for i in range(extra):
        p = tmp / f"x{i}.img"
        with open(p, "wb") as f:
            f.truncate(member_bytes)
        extras.append(p)
    members = [Member(p) for p in paths]
    try:
        drv = make_driver(g, [Slot(m, data_offset) for m in members])
        content = random.Random(seed).randbytes(drv.size)
        drv.write(0, content)
        drv.flush()
    finally:
        for m in members:
            m.close()
    return paths, extras, content


def read_array(paths: list[Path]) -> tuple[Geometry, bytes, int]:
    """(geometry, content, scrub mismatches) of a plain (not reshaping) array's files."""
    with open_members(paths, readonly=True) as ms:
        sb = ms.sb
        assert not sb.reshape_active
        g = geometry_of(sb)
        drv = make_driver(g, [Slot(m, sb.data_offset_bytes) if m is not None else None
                              for m in ms.by_role[: g.raid_disks]])
        data = drv.read(0, drv.size)
        bad = drv.scrub(0, drv.rows) if not drv.missing() else 0
        return g, data, bad


def superblocks(paths: list[Path]) -> list[Superblock]:
    return [read_superblock(p) for p in paths if os.path.exists(p)]


def settle_resync(paths: list[Path]) -> bool:
    """If the superblocks ask for a resync (a raid10 far target's near-only pass leaves
    its far copies to it), assemble the array as a mount would and let the array's own
    resync run to the end. Returns whether one was needed."""
    if all(sb.is_clean for sb in superblocks(paths)):
        return False
    import trio

    from fuseraid.engine.assemble import open_array

    async def run() -> None:
        async with open_array([str(p) for p in paths]) as array:
            await array.wait_idle()
            assert array.resync_row is None

    trio.run(run)
    assert all(sb.is_clean for sb in superblocks(paths))
    return True


def test_kit_round_trip(tmp_path: Path) -> None:
    g = Geometry(5, 3, 2, 16 * KIB, 256 * KIB)
    paths, _, content = make_array(tmp_path, g, member_bytes=MIB, data_offset=512 * KIB)
    got_g, data, bad = read_array(paths)
    assert got_g == g and data == content and bad == 0
