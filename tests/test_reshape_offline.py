"""Offline reshapes end to end on real member files: the md fixtures left half reshaped by
Linux md, and the migration matrix (every pair of the issue's geometries): the result is
a plain md array of the new geometry whose content equals the model and scrubs clean."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from test_migration_kit import KIB, make_array, read_array, settle_resync, superblocks

from fuseraid.errors import GeometryError
from fuseraid.layout import Geometry, encode_raid10
from fuseraid.member.device import Member
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import Request
from fuseraid.migration.resume import open_members, resume_reshape
from fuseraid.superblock.codec import MD_FEATURE_RESHAPE_ACTIVE

# ---------------------------------------------------------------- md's half-done reshapes

PARKED = ["r5-4to5-left-symmetric-c64-grow-parked50", "r5-4-to-r6-5-c64-parked50"]


@pytest.mark.parametrize("name", PARKED)
def test_md_parked_reshape_reads_and_finishes(md_fixture, name: str) -> None:
    meta, paths = md_fixture(name)
    with open_members(paths) as ms:
        r = resume_reshape(ms.sbset, ms.by_role)
        assert r.border == meta["reshape"]["reshape_position_array_sectors"] * 512
        assert r.plan.new_offsets[0] == meta["reshape"]["new_offset_sectors"] * 512
        v = r.volume
        assert v.size == meta["array_bytes"]
        assert hashlib.sha256(v.read(0, v.size)).hexdigest() == meta["array_sha256"]
        run_offline(r)
    g, data, bad = read_array(paths)
    after = meta["resume"]
    assert len(data) == after["array_bytes_after"]
    assert hashlib.sha256(data).hexdigest() == after["array_sha256_after"]
    assert bad == 0
    for sb in superblocks(paths):
        assert not sb.feature_map & MD_FEATURE_RESHAPE_ACTIVE
        assert sb.data_offset == meta["reshape"]["new_offset_sectors"]
        assert sb.raid_disks == meta["reshape"]["to"]["raid_devices"]
        assert sb.level == meta["reshape"]["to"]["level"]


# ---------------------------------------------------------------- the matrix

C = 16 * KIB
DEV = 256 * KIB
OFFSET = 256 * KIB
MEMBER = OFFSET + DEV + 128 * KIB

GEOMETRIES = {
    "r0-2": Geometry(0, 2, 0, C, DEV),
    "r0-3": Geometry(0, 3, 0, C, DEV),
    "r1-2": Geometry(1, 2, 0, 0, DEV),
    "r1-3": Geometry(1, 3, 0, 0, DEV),
    "r4-3": Geometry(4, 3, 0, C, DEV),
    "r5-3-ls": Geometry(5, 3, 2, C, DEV),
    "r5-4-ra": Geometry(5, 4, 1, C, DEV),
    "r5-4-pf": Geometry(5, 4, 4, C, DEV),
    "r6-4-ls": Geometry(6, 4, 2, C, DEV),
    "r6-5-ddf": Geometry(6, 5, 9, C, DEV),
    "r6-5-ls6": Geometry(6, 5, 18, C, DEV),
    "r10-4-n2": Geometry(10, 4, encode_raid10(2), C, DEV),
    "r10-4-o2": Geometry(10, 4, encode_raid10(1, 2, offset=True), C, DEV),
    "r10-4-f2": Geometry(10, 4, encode_raid10(1, 2), C, DEV),
    "r10-3-f2": Geometry(10, 3, encode_raid10(1, 2), C, DEV),
    "r5-3-c8": Geometry(5, 3, 2, 8 * KIB, DEV),
    "r6-4-c32": Geometry(6, 4, 2, 32 * KIB, DEV),
}
PAIRS = [(a, b) for a, b in itertools.permutations(GEOMETRIES, 2)]
FAST = {("r5-3-ls", "r5-4-ra"), ("r5-4-ra", "r6-5-ddf"), ("r6-5-ls6", "r5-4-pf"),
        ("r0-3", "r10-4-o2"), ("r1-2", "r6-4-ls"), ("r10-4-n2", "r4-3"), ("r5-3-c8", "r5-3-ls"),
        ("r6-4-c32", "r10-4-n2"), ("r1-3", "r6-4-c32")}


MIN_DISKS = {0: 1, 1: 1, 4: 2, 5: 2, 6: 4, 10: 2}
# Pairs whose new raid_disks is below the OLD level's minimum (e.g. raid6 on 5 -> raid5
# on 3): recordable since the codec checks raid_disks - delta_disks against the old level
# and raid_disks against new_level while a reshape is active. One of them runs in CI.
BELOW_OLD_MINIMUM = [(a, b) for a, b in PAIRS
                     if GEOMETRIES[b].raid_disks < MIN_DISKS[GEOMETRIES[a].level]]
FAST.add(("r6-5-ddf", "r5-3-ls"))
# raid10 far (tests/test_reshape_far.py has the rest): as target (a near-only pass, then
# the resync) and as source
FAST |= {("r5-4-ra", "r10-4-f2"), ("r10-4-f2", "r6-5-ls6"), ("r10-3-f2", "r10-4-n2")}


def migrate(tmp: Path, old: Geometry, new: Geometry, *, backup: bool = False,
            member: int = MEMBER, offset: int = OFFSET) -> None:
    """old -> new offline; asserts the result is the model and scrubs clean."""
    extra = max(0, new.raid_disks - old.raid_disks)
    paths, extras, content = make_array(tmp, old, member_bytes=member, data_offset=offset,
                                        extra=extra)
    req = Request(level=new.level, raid_disks=new.raid_disks, chunk=new.chunk or None,
                  layout=new.layout)
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            exposed = min(old.array_size, Geometry(
                new.level, new.raid_disks, new.layout, new.chunk,
                old.dev_size // new.chunk * new.chunk if new.chunk else old.dev_size,
            ).array_size)
            plan, reshape = begin_reshape(
                ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                backup_file=str(tmp / "backup") if backup else None, rebuild_now=True)
            if reshape is not None:
                run_offline(reshape)
        finally:
            for _, m in added:
                m.close()
    # a near-only pass onto raid10 far leaves the far copies to the array's resync
    assert settle_resync(paths + extras) == (reshape is not None and plan.near_only)
    g, data, bad = read_array(paths + extras)
    assert (g.level, g.raid_disks, g.layout) == (new.level, new.raid_disks, new.layout)
    keep = min(len(content), exposed)
    assert data[:keep] == content[:keep]
    assert data[keep:] == bytes(len(data) - keep)
    assert bad == 0


@pytest.mark.parametrize("a,b", [p for p in PAIRS if p in FAST])
def test_matrix_fast(tmp_path: Path, a: str, b: str) -> None:
    migrate(tmp_path, GEOMETRIES[a], GEOMETRIES[b])


@pytest.mark.slow
@pytest.mark.parametrize("a,b", PAIRS)
def test_matrix_full(tmp_path: Path, a: str, b: str) -> None:
    migrate(tmp_path, GEOMETRIES[a], GEOMETRIES[b])


@pytest.mark.parametrize("a,b", [("r5-4-ra", "r5-4-pf"), ("r5-3-ls", "r5-3-c8"),
                                 ("r5-3-ls", "r5-4-ra"), ("r6-5-ddf", "r5-4-ra")])
def test_in_place_with_backup_file(tmp_path: Path, a: str, b: str) -> None:
    # no headroom before or after the data: the window must go through the backup file
    migrate(tmp_path, GEOMETRIES[a], GEOMETRIES[b], backup=True, member=OFFSET + DEV,
            offset=16 * KIB)


def test_in_place_without_backup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GeometryError, match="--backup-file"):
        migrate(tmp_path, GEOMETRIES["r5-4-ra"], GEOMETRIES["r5-4-pf"], member=16 * KIB + DEV,
                offset=16 * KIB)


def test_instant_raid5_to_raid6_marks_q_for_rebuild(tmp_path: Path) -> None:
    old = GEOMETRIES["r5-4-ra"]
    paths, extras, content = make_array(tmp_path, old, member_bytes=MEMBER, data_offset=OFFSET,
                                        extra=1)
    with open_members(paths) as ms:
        m = Member(extras[0])
        try:
            plan, reshape = begin_reshape(ms.sbset, ms.by_role,
                                          Request(level=6, layout=17, raid_disks=5),
                                          add=[(str(extras[0]), m)])
        finally:
            m.close()
    assert plan.instant and reshape is None
    sbs = superblocks(paths + extras)
    assert all(sb.level == 6 and sb.layout == 17 and sb.raid_disks == 5 for sb in sbs)
    assert sbs[-1].role == 4 and sbs[-1].feature_map & 2  # RECOVERY_OFFSET: rebuild Q
    # degraded (Q missing) read: the data did not move
    with open_members(paths) as ms:
        from fuseraid.engine.levels import Slot, make_driver
        slots = [Slot(x, OFFSET) for x in ms.by_role[:4]] + [None]
        assert make_driver(plan.new, slots).read(0, plan.new.array_size) == content


def test_shrink_needs_cut_size(tmp_path: Path) -> None:
    paths, _, _ = make_array(tmp_path, GEOMETRIES["r5-4-ra"], member_bytes=MEMBER,
                             data_offset=OFFSET)
    with open_members(paths) as ms, pytest.raises(GeometryError, match="--array-size"):
        begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=3))


def test_member_failing_mid_migration_finishes_degraded(tmp_path: Path) -> None:
    old = Geometry(6, 4, 2, C, DEV)
    paths, extras, content = make_array(tmp_path, old, member_bytes=MEMBER, data_offset=OFFSET,
                                        extra=1)
    windows = {"n": 0}
    with open_members(paths) as ms:
        victim = ms.by_role[1]

        def hook(step: str) -> None:
            if step == "moved":
                windows["n"] += 1
                if windows["n"] == 3:
                    victim.close()  # every later I/O on it fails (EBADF): a dead member

        added = [(str(extras[0]), Member(extras[0]))]
        try:
            _, reshape = begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=5), add=added,
                                       max_window=32 * KIB, hook=hook)
            assert reshape is not None
            run_offline(reshape)
            assert reshape.failed_devs == {1}
        finally:
            for _, m in added:
                m.close()
    survivors = [p for p in paths + extras if p != paths[1]]
    sbs = superblocks(survivors)
    assert all(sb.dev_roles[1] == 0xFFFE and sb.raid_disks == 5 for sb in sbs)  # faulty
    g, data, _ = read_array(survivors)
    assert g.raid_disks == 5 and data[: len(content)] == content


def test_degraded_md_array_grows(md_fixture, tmp_path: Path) -> None:
    meta, paths = md_fixture("r5-4-left-symmetric-c64-degraded")  # role 2 missing
    extra = tmp_path / "x.img"
    with open(extra, "wb") as f:
        f.truncate(4 << 20)
    with open_members(paths) as ms:
        assert ms.by_role[2] is None
        added = [(str(extra), Member(extra))]
        try:
            _, reshape = begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=5), add=added)
            assert reshape is not None
            run_offline(reshape)
        finally:
            added[0][1].close()
    g, data, _ = read_array(paths + [extra])
    assert g.raid_disks == 5 and len(data) == 12 << 20
    assert hashlib.sha256(data[: meta["array_bytes"]]).hexdigest() == meta["array_sha256"]
    assert data[meta["array_bytes"] :] == bytes(len(data) - meta["array_bytes"])
