"""Regressions for the reshape review's findings: spares taken by a reshape keep one
superblock entry (their own, changed), partially rebuilt members are never used as
valid old-geometry members, the engine/migration layering holds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio
from test_migration_kit import KIB, make_array, read_array, superblocks

from fuseraid.errors import FuseraidError
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration import open_array
from fuseraid.migration.live import start_live_reshape
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import Request
from fuseraid.migration.resume import open_members
from fuseraid.superblock.codec import (
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_RECOVERY_OFFSET,
    read_superblock,
    write_superblock,
)

G3 = Geometry(5, 3, 2, 16 * KIB, 256 * KIB)


def _own_role(path: Path) -> int:
    sb = read_superblock(path)
    return sb.dev_roles[sb.dev_number]


# ---- finding 5: a spare already in the superblock set --------------------------------


async def test_live_grow_spare_keeps_one_entry(tmp_path: Path) -> None:
    paths, extras, content = make_array(tmp_path, G3, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        await array.add(str(extras[0]))
        spare_dev = read_superblock(extras[0]).dev_number
        r = await start_live_reshape(array, nursery, Request(raid_disks=4),
                                     max_window=32 * KIB, speed_limit=64 * KIB)
        assert r is not None
        array.reshape_control.pause()
        entries = array.superblocks.entries
        assert len(entries) == 4 and len({id(e.member) for e in entries}) == 4
        # on disk already (the start commit): the spare's own superblock gives it role 3
        sb = read_superblock(extras[0])
        assert sb.dev_number == spare_dev and sb.dev_roles[spare_dev] == 3
        assert all(_own_role(p) == i for i, p in enumerate(paths))
        array.reshape_control.resume()
        array.reshape_control.speed_limit = None
        with trio.fail_after(60):
            await array.reshape_control.finished.wait()
    g, data, bad = read_array(paths + extras)
    assert g.raid_disks == 4 and data[: len(content)] == content and bad == 0


def test_offline_grow_reuses_a_spares_own_slot(tmp_path: Path) -> None:
    """A member that is already a spare of this array (its superblock says so) keeps its
    device slot and uuid when an offline grow gives it a role: no phantom spare slot."""
    paths, extras, content = make_array(tmp_path, G3, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    sb0 = read_superblock(paths[0])
    dev = 5
    roles = list(sb0.dev_roles) + [MD_DISK_ROLE_SPARE] * (dev + 1 - len(sb0.dev_roles))
    for p in paths:
        sb = read_superblock(p)
        write_superblock(p, sb.replace(dev_roles=list(roles), events=sb.events + 1))
    import secrets

    uuid = secrets.token_bytes(16)
    spare = read_superblock(paths[0]).replace(dev_number=dev, device_uuid=uuid)
    write_superblock(extras[0], spare)
    with open_members(paths) as ms:
        m = Member(extras[0])
        ms.opened.append(m)
        _, r = begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=4),
                             add=[(str(extras[0]), m)])
        assert r is not None
        run_offline(r)
    sb = read_superblock(extras[0])
    assert (sb.dev_number, sb.device_uuid) == (dev, uuid) and sb.dev_roles[dev] == 3
    spare_slots = [d for d, x in enumerate(sb.dev_roles) if x == MD_DISK_ROLE_SPARE]
    assert all(sb.dev_roles[d] != 3 for d in spare_slots)
    assert sb.dev_roles.count(3) == 1
    g, data, bad = read_array(paths + extras)
    assert g.raid_disks == 4 and data[: len(content)] == content and bad == 0


# ---- finding 6: a partially rebuilt member --------------------------------------------


def _mark_rebuilding(path: Path, sectors: int) -> None:
    sb = read_superblock(path)
    write_superblock(path, sb.replace(feature_map=sb.feature_map | MD_FEATURE_RECOVERY_OFFSET,
                                      recovery_offset=sectors))


def test_offline_grow_treats_partially_rebuilt_member_as_stale(tmp_path: Path) -> None:
    paths, extras, content = make_array(tmp_path, G3, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    # role 1 rebuilt up to 16 KiB only: its bytes beyond are garbage
    with open(paths[1], "r+b") as f:
        f.seek(256 * KIB + 16 * KIB)
        f.write(b"\xa5" * (200 * KIB))
    _mark_rebuilding(paths[1], 32)
    with open_members(paths) as ms:
        m = Member(extras[0])
        ms.opened.append(m)
        _, r = begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=4),
                             add=[(str(extras[0]), m)])
        assert r is not None
        run_offline(r)
    g, data, bad = read_array(paths + extras)
    assert g.raid_disks == 4 and data[: len(content)] == content and bad == 0
    assert not any(sb.feature_map & MD_FEATURE_RECOVERY_OFFSET
                   for sb in superblocks(paths + extras))


def test_grow_refuses_partially_rebuilt_member_without_redundancy(tmp_path: Path) -> None:
    paths, extras, _ = make_array(tmp_path, G3, member_bytes=768 * KIB,
                                  data_offset=256 * KIB, extra=1)
    _mark_rebuilding(paths[1], 32)
    with open_members(paths[:1] + paths[1:]) as ms:
        ms.by_role[2] = None  # role 2 missing too: the old geometry cannot do without 1
        m = Member(extras[0])
        ms.opened.append(m)
        with pytest.raises(FuseraidError, match="rebuilt"):
            begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=4),
                          add=[(str(extras[0]), m)])


def test_instant_change_refuses_partially_rebuilt_member(tmp_path: Path) -> None:
    paths, extras, _ = make_array(tmp_path, Geometry(5, 4, 2, 16 * KIB, 256 * KIB),
                                  member_bytes=768 * KIB, data_offset=256 * KIB, extra=1)
    _mark_rebuilding(paths[1], 32)
    before = [read_superblock(p).events for p in paths]
    with open_members(paths) as ms:
        m = Member(extras[0])
        ms.opened.append(m)
        with pytest.raises(FuseraidError, match="rebuilt"):
            begin_reshape(ms.sbset, ms.by_role, Request(level=6, layout=18, raid_disks=5),
                          add=[(str(extras[0]), m)])
    assert [read_superblock(p).events for p in paths] == before


# ---- layering ------------------------------------------------------------------------


def test_layering_imports() -> None:
    code = (
        "import sys\n"
        "import fuseraid.engine.array, fuseraid.engine.assemble\n"
        "assert not any(m.startswith('fuseraid.migration') for m in sys.modules), 'engine'\n"
        "import fuseraid.migration, fuseraid.migration.control\n"
        "assert not any(m.startswith('fuseraid.front') for m in sys.modules), 'migration'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_migration_uses_no_array_privates() -> None:
    root = Path(__file__).parent.parent / "fuseraid" / "migration"
    for f in root.glob("*.py"):
        assert "array._" not in f.read_text(), f.name


async def test_engine_refuses_reshaping_array_without_opener(tmp_path: Path) -> None:
    from fuseraid.engine.assemble import assemble

    paths, _, _ = make_array(tmp_path, Geometry(6, 4, 2, 16 * KIB, 256 * KIB),
                             member_bytes=768 * KIB, data_offset=256 * KIB)
    with open_members(paths) as ms:
        begin_reshape(ms.sbset, ms.by_role, Request(layout=10))
    with pytest.raises(FuseraidError, match="fuseraid mount|grow --members"):
        await assemble([str(p) for p in paths])


# ---- finding 4: the busy check runs under the whole-array lock, resyncs count ----------


async def test_live_start_refused_while_a_resync_is_pending(tmp_path: Path) -> None:
    from fuseraid.migration import assemble

    paths, extras, content = make_array(tmp_path, G3, member_bytes=768 * KIB,
                                        data_offset=256 * KIB, extra=1)
    array = await assemble([str(p) for p in paths])  # no start(): nothing runs by itself
    try:
        array.start_resync(0)
        before = array.superblocks.events
        async with trio.open_nursery() as nursery:
            with pytest.raises(FuseraidError, match="busy: a resync is pending"):
                await start_live_reshape(array, nursery, Request(raid_disks=4),
                                         add=[str(extras[0])])
        assert array.reshape is None and array.superblocks.events == before
        assert array.geometry.raid_disks == 3
        assert await array.read(0, len(content)) == content
    finally:
        await array.close()
    assert read_array(paths)[0].raid_disks == 3
