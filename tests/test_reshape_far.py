"""raid10 far layouts as reshape source and target (docs/reshape.md "raid10 far layouts"):
the list footprint against md's per-sector placement, every window of every plan against
the real layouts, the near-only read/write rule of the driver, offline and live passes
(the near-only pass, then the array's resync), the refusal of a near-only target with a
member missing, and a crash at every step of an f2-source and an f2-target pass."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import layout_reference as ref
import pytest
import trio
from fsutil import fuseraid, fuseraid_mount
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from test_migration_kit import (
    KIB,
    MIB,
    make_array,
    read_array,
    settle_resync,
    superblocks,
)
from test_migration_plan import footprint
from test_reshape_live import _hammer

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.errors import FuseraidError, GeometryError, MemberIOError
from fuseraid.layout import Geometry, encode_raid10
from fuseraid.member.device import Member
from fuseraid.migration import open_array
from fuseraid.migration.live import start_live_reshape
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import (
    FORWARD,
    Plan,
    Request,
    dev_ranges,
    far_region,
    far_stride,
    plan_reshape,
    window_safe,
)
from fuseraid.migration.resume import open_members, resume_reshape

C = 16 * KIB
DEV = 256 * KIB
F2 = encode_raid10(1, 2)
BLK = 4096

# ---------------------------------------------------------------- the list footprint

FAR_LAYOUTS = [  # (raid_disks, near, far, far-set mode)
    (2, 1, 2, 0), (3, 1, 2, 0), (4, 1, 2, 0), (5, 1, 2, 0), (3, 1, 3, 0), (5, 1, 3, 0),
    (4, 2, 2, 0), (5, 2, 2, 0), (4, 1, 2, 1), (6, 1, 2, 1), (4, 1, 2, 2), (6, 1, 3, 2),
]


def _far_geometry(rd: int, near: int, far: int, mode: int, chunks: int, tail: int) -> Geometry:
    chunk = 4 * KIB
    layout = encode_raid10(near, far, far_set_mode=mode)
    return Geometry(10, rd, layout, chunk, chunks * chunk + tail * 512)


@pytest.mark.parametrize("rd,near,far,mode", FAR_LAYOUTS)
def test_far_footprint_is_md_placement(rd: int, near: int, far: int, mode: int) -> None:
    """Exhaustive on a half-chunk grid: the ranges hold every copy md places (per-sector
    reference), every whole row in them holds one, the near part holds exactly the near
    copies and nothing else is needed for the pass to write near copies only."""
    try:
        g = _far_geometry(rd, near, far, mode, chunks=7 * far, tail=3)
    except GeometryError:
        pytest.skip("md would place two copies on one disk")
    cs = g.chunk // 512
    geo = ref.raid10_geo(g.layout, rd, cs, g.dev_size // 512)
    sectors = geo["array_sectors"]
    assert sectors * 512 == g.array_size
    stride = far_stride(g)
    assert stride == geo["stride"] * 512 and far_region(g) == (stride, g.dev_used)
    phys = [ref.raid10_find_phys(geo, s) for s in range(sectors)]
    grid = range(0, sectors + 1, cs // 2)
    for a in grid:
        for b in grid:
            if b <= a:
                continue
            copies = {addr * 512 for s in range(a, b) for _, addr in phys[s]}
            near = {x for x in copies if x < stride}
            for near_only, want in ((False, copies), (True, near)):
                ranges = dev_ranges(g, a * 512, b * 512, near_only=near_only)
                assert ranges == sorted(ranges)
                pairs = zip(ranges, ranges[1:], strict=False)
                assert all(lo < hi <= nlo for (lo, hi), (nlo, _) in pairs)
                assert all(any(lo <= x < hi for lo, hi in ranges) for x in want)
                for lo, hi in ranges:  # tight to whole rows
                    for row in range(lo, hi, g.chunk):
                        assert any(row <= x < row + g.chunk for x in want), (a, b, row)
                if near_only:
                    assert len(ranges) == 1 and ranges[0][1] <= stride


# ---------------------------------------------------------------- every window is safe


def _copies(g: Geometry, offset: int, a: int, b: int, near_only: bool) -> set[tuple[int, int]]:
    """(role, 4 KiB block) of member bytes holding array bytes [a, b) of g with their
    parity rows, from the real layout; near_only: a far layout's near copies only."""
    return footprint(g, offset, a, b, skip_from=far_stride(g) if near_only else None)


def reference_safe(p: Plan, start: int, end: int, backed_up: bool) -> bool:
    """The new layout's writes of the window (near copies only on a near-only pass) miss
    every copy of the old data still needed after a crash (the near ones only when the
    pass keeps no old far copies)."""
    written = _copies(p.new, p.new_offsets[0], start, end, p.near_only)
    if p.direction == FORWARD:
        keep = (end if backed_up else start, p.content)
    else:
        keep = (0, min(start if backed_up else end, p.content))
    return not written & _copies(p.old, p.old_offsets[0], *keep, p.old_near_only)


@st.composite
def _geometries(draw: st.DrawFn, far: bool) -> Geometry:
    chunk = draw(st.sampled_from([4 * KIB, 8 * KIB, 16 * KIB]))
    dev = draw(st.integers(4, 24)) * 16 * KIB
    if far:
        near, copies = draw(st.sampled_from([(1, 2), (1, 2), (1, 3), (2, 2)]))
        try:
            return Geometry(10, draw(st.integers(2, 5)), encode_raid10(near, copies), chunk, dev)
        except GeometryError:
            assume(False)
            raise
    level = draw(st.sampled_from([0, 1, 5, 6, 10]))
    if level == 1:
        return Geometry(1, draw(st.integers(2, 3)), 0, 0, dev)
    if level == 0:
        return Geometry(0, draw(st.integers(2, 4)), 0, chunk, dev)
    if level == 5:
        return Geometry(5, draw(st.integers(3, 5)), draw(st.integers(0, 5)), chunk, dev)
    if level == 6:
        return Geometry(6, draw(st.integers(4, 6)), draw(st.sampled_from([2, 9, 18])), chunk,
                        dev)
    lay = draw(st.sampled_from([encode_raid10(2), encode_raid10(1, 2, offset=True)]))
    return Geometry(10, draw(st.integers(2, 5)), lay, chunk, dev)


@st.composite
def _pairs(draw: st.DrawFn) -> tuple[Geometry, Geometry]:
    side = draw(st.sampled_from(["source", "target", "both"]))
    old = draw(_geometries(far=side != "target"))
    new = draw(_geometries(far=side != "source"))
    return old, new


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pair=_pairs(), head=st.sampled_from([0, 1, 3, 16, 64, 256]),
       tail=st.sampled_from([0, 1, 3, 16, 64, 256]), backup=st.booleans())
def test_every_window_of_every_far_plan_is_safe(
    pair: tuple[Geometry, Geometry], head: int, tail: int, backup: bool
) -> None:
    old, new = pair
    floor = 16 * KIB
    o_old = floor + head * 4 * KIB
    roles = max(old.raid_disks, new.raid_disks)
    size = o_old + old.dev_size + tail * 4 * KIB
    req = Request(level=new.level, raid_disks=new.raid_disks, chunk=new.chunk or None,
                  layout=new.layout, single_copy=True)
    exposed = min(old.array_size, new.array_size)
    try:
        p = plan_reshape(old, [o_old] * old.raid_disks, [size] * roles, req, exposed=exposed,
                         backup=backup, max_window=64 * KIB)
    except GeometryError:
        return  # refusals are tested by example
    if p.instant:
        return
    # near-only exactly when the new far part would land on old data (any of it)
    region = far_region(p.new)
    if region is not None:
        seen = min(p.old.array_size, p.new.array_size)
        far_blocks = {(r, (p.new_offsets[0] + x) // BLK) for r in range(p.new.raid_disks)
                      for x in range(region[0], region[1], BLK)}
        assert p.near_only == bool(far_blocks & _copies(p.old, p.old_offsets[0], 0, seen,
                                                          False))
    else:
        assert not p.near_only
    # old far copies dropped only when no pass with these offsets could keep them
    assert not p.old_near_only or far_stride(p.old) is not None
    if p.old_near_only:
        keep = replace(p, content=p.seen)
        keep.__dict__["old_near_only"] = False
        with pytest.raises(GeometryError):
            _walk(keep)
    border = 0 if p.direction == FORWARD else p.end
    covered = 0
    while (border < p.end) if p.direction == FORWARD else (border > 0):
        s, e, needs = p.next_window(border)
        assert reference_safe(p, s, e, needs)
        assert needs == (not window_safe(p, s, e, False))
        covered += e - s
        border = e if p.direction == FORWARD else s
    assert covered == p.end


TARGETS = [Geometry(5, 4, 2, 8 * KIB, 96 * KIB), Geometry(5, 3, 2, 8 * KIB, 96 * KIB),
           Geometry(6, 5, 2, 8 * KIB, 96 * KIB), Geometry(0, 2, 0, 8 * KIB, 96 * KIB),
           Geometry(1, 2, 0, 0, 96 * KIB), Geometry(10, 4, encode_raid10(2), 8 * KIB, 96 * KIB),
           Geometry(10, 3, F2, 8 * KIB, 96 * KIB)]


def test_plans_dropping_the_old_far_copies_are_safe() -> None:
    """Every far source -> target above with little or no room (where the far copies
    cannot be kept): whatever is planned is safe by the reference, window by window."""
    dropped = 0
    for old in (Geometry(10, 4, F2, 8 * KIB, 96 * KIB), Geometry(10, 3, F2, 8 * KIB, 96 * KIB)):
        for new in TARGETS:
            for head, tail in ((0, 0), (0, 8), (8, 0), (2, 2), (24, 24)):
                req = Request(level=new.level, raid_disks=new.raid_disks,
                              chunk=new.chunk or None, layout=new.layout, single_copy=True)
                o_old = 16 * KIB + head * 4 * KIB
                sizes = [o_old + old.dev_size + tail * 4 * KIB] * 5
                try:
                    p = plan_reshape(old, [o_old] * old.raid_disks, sizes, req, backup=True,
                                     exposed=min(old.array_size, new.array_size),
                                     max_window=32 * KIB)
                except GeometryError:
                    continue
                dropped += p.old_near_only
                border = 0 if p.direction == FORWARD else p.end
                while (border < p.end) if p.direction == FORWARD else (border > 0):
                    s, e, needs = p.next_window(border)
                    assert reference_safe(p, s, e, needs), (old, new, head, tail, s, e)
                    border = e if p.direction == FORWARD else s
    assert dropped >= 10


def _walk(p: Plan) -> None:
    border = 0 if p.direction == FORWARD else p.end
    while (border < p.end) if p.direction == FORWARD else (border > 0):
        s, e, _ = p.next_window(border)
        border = e if p.direction == FORWARD else s


def test_room_after_the_data_buys_a_pass_with_both_copies() -> None:
    """With room to move the data offset past the old data, the far copies are written
    in the pass (no resync, no redundancy gap); without it the pass is near-only."""
    old = Geometry(5, 3, 2, C, DEV)
    req = Request(level=10, raid_disks=4, layout=F2, chunk=C)
    tight = plan_reshape(old, [256 * KIB] * 3, [640 * KIB] * 4, req)
    assert tight.near_only and not tight.backup_needed
    roomy = plan_reshape(old, [256 * KIB] * 3, [1024 * KIB] * 4, req)
    assert not roomy.near_only and not roomy.backup_needed and roomy.delta > 0


def test_far_source_keeps_its_far_copies_when_the_room_allows() -> None:
    """f2 (near part 4 array bytes per member byte) -> raid5 on 4 (3): the write front
    outruns the near part's read front by dev/12 per dev, so keeping the far copies needs
    about dev/6 of room before the data; with less, the pass keeps the near copies only
    (in place, backward) rather than refuse."""
    f2 = Geometry(10, 4, F2, C, 3 << 20)
    req = Request(level=5, raid_disks=4, chunk=C, single_copy=True)
    with pytest.raises(GeometryError, match="--single-copy"):  # never implied
        plan_reshape(f2, [64 * KIB] * 4, [(64 + 256) * KIB + (3 << 20)] * 4,
                     Request(level=5, raid_disks=4, chunk=C))
    roomy = plan_reshape(f2, [1 << 20] * 4, [4 << 20] * 4, req)
    assert not roomy.old_near_only and roomy.direction == FORWARD and roomy.delta < 0
    tight = plan_reshape(f2, [64 * KIB] * 4, [(64 + 256) * KIB + (3 << 20)] * 4, req)
    assert tight.old_near_only and not tight.backup_needed and 0 < tight.delta <= 256 * KIB
    with pytest.raises(GeometryError, match="--backup-file"):  # no room at all
        plan_reshape(f2, [16 * KIB] * 4, [16 * KIB + (3 << 20)] * 4, req)
    in_place = plan_reshape(f2, [16 * KIB] * 4, [16 * KIB + (3 << 20)] * 4, req, backup=True)
    assert in_place.old_near_only and in_place.delta == 0 and in_place.backup_needed


# ---------------------------------------------------------------- the driver's rule


def _driver(tmp: Path, g: Geometry, stack: list[Member]) -> object:
    slots: list[Slot | None] = []
    for r in range(g.raid_disks):
        p = tmp / f"m{r}.img"
        with open(p, "wb") as f:
            f.truncate(g.dev_used)
        m = Member(p)
        stack.append(m)
        slots.append(Slot(m, 0))
    return make_driver(g, slots)


def test_near_only_pass_never_writes_far_and_reads_near(tmp_path: Path) -> None:
    g = Geometry(10, 4, F2, 4 * KIB, 64 * KIB)
    opened: list[Member] = []
    try:
        drv = _driver(tmp_path, g, opened)
        drv.hold_far()
        stride = far_stride(g)
        data = random.Random(1).randbytes(drv.size)
        drv.write(0, data)
        drv.write(5000, b"y" * 9000)  # unaligned, across chunks
        want = data[:5000] + b"y" * 9000 + data[14000:]
        for m in opened:  # the far part (old data's place during a pass) is untouched
            assert m.pread(stride, g.dev_used - stride) == bytes(g.dev_used - stride)
        assert drv.read(0, drv.size) == want
        drv.slots[1] = None  # a member lost: its rows have no other valid copy
        with pytest.raises(MemberIOError, match="no live copy"):
            drv.read(0, drv.size)
        with pytest.raises(MemberIOError, match="no live copy"):
            drv.write(4 * KIB, b"z" * 4 * KIB)  # chunk 1: near copy on role 1
        assert drv.read(0, 4 * KIB) == want[: 4 * KIB]  # chunk 0: near on role 0
        drv.write(0, b"w" * 100)
        assert drv.read(0, 100) == b"w" * 100
    finally:
        for m in opened:
            m.close()


def test_resync_makes_the_far_copies_and_moves_sync_from(tmp_path: Path) -> None:
    g = Geometry(10, 4, F2, 4 * KIB, 64 * KIB)
    opened: list[Member] = []
    try:
        drv = _driver(tmp_path, g, opened)
        drv.hold_far()
        data = random.Random(2).randbytes(drv.size)
        drv.write(0, data)
        drv.release_far()  # the pass is done: far copies still stale, reads near
        assert drv.sync_from == 0 and drv.scrub(0, drv.rows) > 0
        drv.write(100, b"a" * 10)  # now every copy is written
        data = data[:100] + b"a" * 10 + data[110:]
        half = drv.rows // 2
        drv.resync(0, half)
        assert drv.sync_from == half * drv.row_bytes
        drv.slots[2] = None  # beyond sync_from its near rows have no valid copy left
        with pytest.raises(MemberIOError):
            drv.read(half * drv.row_bytes, drv.size - half * drv.row_bytes)
        # below it the far copies are good: every byte still reads
        assert drv.read(0, half * drv.row_bytes) == data[: half * drv.row_bytes]
        drv.slots[2] = Slot(opened[2], 0)
        drv.resync(half, drv.rows)
        assert drv.sync_from is None and drv.scrub(0, drv.rows) == 0
        drv.slots[0] = None
        assert drv.read(0, drv.size) == data  # degraded: far copies serve role 0's rows
    finally:
        for m in opened:
            m.close()


# ---------------------------------------------------------------- offline passes


def _migrate(tmp: Path, old: Geometry, req: Request, *, extra: int = 0,
             exposed: int | None = None, member: int = 640 * KIB) -> tuple[Plan, list[Path],
                                                                             bytes]:
    paths, extras, content = make_array(tmp, old, member_bytes=member, data_offset=256 * KIB,
                                        extra=extra)
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            plan, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed)
            assert r is not None
            run_offline(r)
        finally:
            for _, m in added:
                m.close()
    keep = min(len(content), exposed or len(content))
    return plan, paths + extras, content[:keep]


def test_near_only_target_finishes_dirty_and_the_resync_makes_it_md(tmp_path: Path) -> None:
    plan, paths, model = _migrate(tmp_path, Geometry(5, 4, 1, C, DEV),
                                  Request(level=10, raid_disks=4, layout=F2, chunk=C),
                                  exposed=2 * DEV)
    assert plan.near_only
    sbs = superblocks(paths)
    assert all(sb.level == 10 and sb.layout == F2 and sb.resync_offset == 0 for sb in sbs)
    g, data, bad = read_array(paths)  # reads the near copies: the model already
    assert data == model and bad > 0  # the far copies are not made yet
    assert settle_resync(paths)  # as md (and our assembly) would: resync
    g, data, bad = read_array(paths)
    assert data == model and bad == 0


def test_far_target_with_room_is_clean_at_once(tmp_path: Path) -> None:
    plan, paths, model = _migrate(tmp_path, Geometry(5, 3, 2, C, DEV),
                                  Request(level=10, raid_disks=4, layout=F2, chunk=C),
                                  extra=1, member=1024 * KIB)
    assert not plan.near_only
    assert all(sb.is_clean for sb in superblocks(paths))
    g, data, bad = read_array(paths)
    assert g.layout == F2 and data[: len(model)] == model and bad == 0


def test_far_source(tmp_path: Path) -> None:
    _, paths, model = _migrate(tmp_path, Geometry(10, 4, F2, C, DEV),
                               Request(level=5, raid_disks=4, layout=2, chunk=C))
    assert all(sb.is_clean for sb in superblocks(paths))
    g, data, bad = read_array(paths)
    assert g.level == 5 and data[: len(model)] == model and bad == 0


def test_far_source_without_room_keeps_near_copies(tmp_path: Path) -> None:
    paths, extras, content = make_array(tmp_path, Geometry(10, 4, F2, C, DEV),
                                        member_bytes=80 * KIB + DEV, data_offset=16 * KIB)
    with open_members(paths) as ms:
        plan, r = begin_reshape(ms.sbset, ms.by_role,
                                Request(level=5, raid_disks=4, chunk=C, single_copy=True))
        assert r is not None and plan.old_near_only
        run_offline(r)
    g, data, bad = read_array(paths)
    assert g.level == 5 and data[: len(content)] == content and bad == 0
    # degraded, the rows whose near copy is gone would have no valid copy: refused
    paths, _, _ = make_array(tmp_path / "degraded", Geometry(10, 4, F2, C, DEV),
                             member_bytes=80 * KIB + DEV, data_offset=16 * KIB)
    with open_members(paths[1:]) as ms, \
            pytest.raises(FuseraidError, match=r"near copies .* role\(s\) 0 missing"):
        begin_reshape(ms.sbset, ms.by_role,
                      Request(level=5, raid_disks=4, chunk=C, single_copy=True))


def test_near_only_target_with_a_member_missing_is_refused(tmp_path: Path) -> None:
    old = Geometry(5, 3, 2, C, DEV)
    paths, extras, _ = make_array(tmp_path, old, member_bytes=640 * KIB,
                                  data_offset=256 * KIB, extra=1)
    before = [sb.events for sb in superblocks(paths)]
    with open_members(paths[:2]) as ms:  # role 2 missing: a degraded raid5
        m = Member(extras[0])
        try:
            with pytest.raises(FuseraidError, match=r"resync .* role\(s\) 2 missing"):
                begin_reshape(ms.sbset, ms.by_role,
                              Request(level=10, raid_disks=4, layout=F2, chunk=C),
                              add=[(str(extras[0]), m)])
        finally:
            m.close()
    assert [sb.events for sb in superblocks(paths)] == before  # nothing recorded
    with pytest.raises(FuseraidError, match="no md superblock"):
        superblocks(extras)


# ---------------------------------------------------------------- crash at every step


class Crash(Exception):
    pass


# name: (old, request, member bytes, data offset, extra, exposed, backup)
SCENARIOS = {
    "f2-target": (Geometry(5, 4, 1, C, DEV), Request(level=10, raid_disks=4, layout=F2, chunk=C),
                  640 * KIB, 256 * KIB, 0, 2 * DEV, False),
    "f2-source": (Geometry(10, 4, F2, C, DEV), Request(level=5, raid_disks=4, layout=2,
                                                         chunk=C),
                  640 * KIB, 256 * KIB, 0, None, False),
    "f2-target-in-place": (Geometry(5, 3, 2, C, DEV),
                           Request(level=10, raid_disks=4, layout=F2, chunk=C),
                           16 * KIB + DEV, 16 * KIB, 1, None, True),
    # little room: the old far copies are not kept (old_near_only)
    "f2-source-near-copies": (Geometry(10, 4, F2, C, DEV),
                              Request(level=5, raid_disks=4, layout=2, chunk=C,
                                      single_copy=True),
                              80 * KIB + DEV, 16 * KIB, 0, None, False),
    "f2-source-in-place": (Geometry(10, 4, F2, C, DEV),
                           Request(level=5, raid_disks=4, layout=2, chunk=C,
                                   single_copy=True),
                           16 * KIB + DEV, 16 * KIB, 0, None, True),
}
DROPS = {"f2-source-near-copies", "f2-source-in-place"}


def _scribble(r, start: int, end: int, rng: random.Random) -> None:
    """Noise over everything the window's new-layout write may touch, on every member."""
    for lo, hi in dev_ranges(r.plan.new, start, end, near_only=r.plan.near_only):
        for slot in r.new_slots:
            if slot is not None:
                slot.member.pwrite(slot.data_offset + lo, rng.randbytes(hi - lo))


def _run_with_crash(tmp: Path, name: str, crash_at: int, torn: bool) -> int:
    """Run the scenario with foreground writes between windows, crash at hook call
    `crash_at` (0: never), resume, finish, resync: the result is the model, scrubbed
    clean. Returns the number of hook calls."""
    old, req, member, offset, extra, exposed, backup = SCENARIOS[name]
    rng = random.Random(crash_at * 2 + torn)
    paths, extras, content = make_array(tmp, old, member_bytes=member, data_offset=offset,
                                        extra=extra)
    bfile = str(tmp / "backup") if backup else None
    model = bytearray(content[: exposed or len(content)])
    calls = {"n": 0}
    window = [0, 0]

    def hook(step: str) -> None:
        calls["n"] += 1
        if calls["n"] == crash_at:
            if torn and step == "write":
                _scribble(r, *window, rng)
            raise Crash(step)

    crashed = False
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            plan, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                                    backup_file=bfile, hook=hook, max_window=64 * KIB)
            assert r is not None and plan.backup_needed == backup
            assert plan.old_near_only == (name in DROPS)
            try:
                while not r.done:
                    s, e, b = r.next_window()
                    window[:] = [s, e]
                    r.copy_window(s, e, b)
                    for _ in range(2):  # acknowledged writes on both sides of the border
                        n = rng.randrange(1, 40 * KIB)
                        off = rng.randrange(0, len(model) - n)
                        data = rng.randbytes(n)
                        r.volume.write(off, data)
                        r.volume.flush()
                        model[off : off + n] = data
                r.finish()
            except Crash:
                crashed = True
            if r.backup is not None:
                r.backup.close()
        finally:
            for _, m in added:
                m.close()
    everything = paths + extras
    if crashed:
        with open_members(everything) as ms:
            r = resume_reshape(ms.sbset, ms.by_role, backup_file=bfile)
            assert r.volume.read(0, len(model)) == bytes(model)
            run_offline(r)
            if r.backup is not None:
                r.backup.close()
    settle_resync(everything)
    _, data, bad = read_array(everything)
    assert data[: len(model)] == bytes(model)
    assert data[len(model) :] == bytes(len(data) - len(model))
    assert bad == 0
    return calls["n"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_crash_at_every_step(tmp_path: Path, name: str) -> None:
    total = _run_with_crash(tmp_path / "whole", name, 0, False)
    assert total > 6
    for k in range(1, total + 1):
        for torn in (False, True):
            _run_with_crash(tmp_path / f"c{k}{torn:d}", name, k, torn)


# ---------------------------------------------------------------- live


@pytest.mark.parametrize("target", [True, False], ids=["to-f2", "from-f2"])
async def test_live_far_under_load(tmp_path: Path, target: bool) -> None:
    """A live pass to (near-only, then the array's resync) or from raid10 f2 while
    readers and writers hammer the array; the closed array is clean md with the model."""
    old = Geometry(5, 3, 2, C, 512 * KIB) if target else Geometry(10, 4, F2, C, 512 * KIB)
    req = (Request(level=10, raid_disks=4, layout=F2, chunk=C) if target
           else Request(level=5, raid_disks=4, layout=2, chunk=C))
    paths, extras, content = make_array(tmp_path, old, member_bytes=1024 * KIB,
                                        data_offset=256 * KIB, extra=1 if target else 0)
    model = bytearray(content)
    rng = random.Random(9)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, req, add=[str(p) for p in extras],
                                     max_window=64 * KIB, speed_limit=1 << 20)
        assert r is not None and r.plan.near_only == target
        stop = trio.Event()
        done = {"n": 0}

        async def hammer() -> None:
            done["n"] = await _hammer(array, model, rng, stop)

        nursery.start_soon(hammer)
        with trio.fail_after(120):
            await array.reshape_control.finished.wait()
            assert array.reshape_control.error is None
            await array.wait_idle()  # the resync that makes the far copies
        stop.set()
        assert array.resync_row is None and await array.check() == 0
    # read only after the nursery closed: the count is set when the hammer returns
    assert done["n"] > 10
    assert all(sb.is_clean for sb in superblocks(paths + extras))
    g, data, bad = read_array(paths + extras)
    assert (g.level, g.layout) == (req.level, req.layout)
    assert data[: len(model)] == bytes(model) and bad == 0


async def test_unmount_mid_near_only_pass_then_resume(tmp_path: Path) -> None:
    """Closed cleanly mid-pass, the array stays dirty on disk (the far copies are owed),
    so the assembler resumes the pass and then resyncs."""
    old = Geometry(5, 3, 2, C, 512 * KIB)
    paths, extras, content = make_array(tmp_path, old, member_bytes=1024 * KIB,
                                        data_offset=256 * KIB, extra=1)
    model = bytearray(content)
    everything = [str(p) for p in paths + extras]
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery,
                                     Request(level=10, raid_disks=4, layout=F2, chunk=C),
                                     add=[str(extras[0])], max_window=64 * KIB,
                                     speed_limit=256 * KIB)
        assert r is not None and r.plan.near_only
        with trio.fail_after(60):
            while r.windows < 1:
                await trio.sleep(0.005)
        await array.write(100 * KIB, b"x" * 5000)
        model[100 * KIB : 100 * KIB + 5000] = b"x" * 5000
        assert not r.done
        nursery.cancel_scope.cancel()
    assert all(sb.resync_offset == 0 for sb in superblocks(paths + extras))
    async with open_array(everything) as array:
        assert array.reshape is not None
        assert await array.read(0, len(model)) == bytes(model)
        with trio.fail_after(60):
            while array.reshape_control is None:
                await trio.sleep(0.01)
            await array.reshape_control.finished.wait()
            await array.wait_idle()
        assert array.resync_row is None and await array.check() == 0
    assert all(sb.is_clean for sb in superblocks(paths + extras))
    _, data, bad = read_array(paths + extras)
    assert data[: len(model)] == bytes(model) and bad == 0


async def test_offline_pass_interrupted_then_assembled(tmp_path: Path) -> None:
    """An offline near-only pass stopped after one window: its start commit said "resync
    needed", so the assembler that finishes the pass also makes the far copies."""
    old = Geometry(5, 3, 2, C, DEV)
    paths, extras, content = make_array(tmp_path, old, member_bytes=640 * KIB,
                                        data_offset=256 * KIB, extra=1)
    with open_members(paths) as ms:
        m = Member(extras[0])
        try:
            plan, r = begin_reshape(ms.sbset, ms.by_role,
                                    Request(level=10, raid_disks=4, layout=F2, chunk=C),
                                    add=[(str(extras[0]), m)], max_window=64 * KIB)
            assert r is not None and plan.near_only
            r.copy_window(*r.next_window())
        finally:
            m.close()
    everything = paths + extras
    assert all(sb.resync_offset == 0 and sb.reshape_active for sb in superblocks(everything))
    async with open_array([str(p) for p in everything]) as array:
        with trio.fail_after(60):
            while array.reshape_control is None:
                await trio.sleep(0.01)
            await array.reshape_control.finished.wait()
            await array.wait_idle()
        assert array.resync_row is None and await array.check() == 0
    assert all(sb.is_clean for sb in superblocks(everything))
    _, data, bad = read_array(everything)
    assert data[: len(content)] == content and bad == 0


# ---------------------------------------------------------------- through a FUSE mount


@pytest.mark.skipif(shutil.which("fio") is None or not Path("/dev/fuse").exists(),
                    reason="needs fio and /dev/fuse")
def test_grow_to_f2_through_the_mount_under_fio(tmp_path: Path) -> None:
    """`fuseraid grow MOUNTPOINT --level 10 --layout f2` while fio writes and verifies;
    the daemon resyncs after the near-only pass; unmounted, the result is clean md."""
    old = Geometry(5, 3, 2, 64 * KIB, 4 * MIB)
    paths, extras, _ = make_array(tmp_path, old, member_bytes=7 * MIB, data_offset=2 * MIB,
                                  extra=1)
    with fuseraid_mount(paths, tmp_path / "mp") as mp:
        image = mp / "image"
        fio = subprocess.Popen(
            ["fio", "--name=v", f"--filename={image}", "--rw=randwrite", "--bs=4k",
             "--size=6M", "--verify=crc32c", "--verify_fatal=1", "--do_verify=1",
             "--direct=1", "--ioengine=psync", "--loops=2", "--randseed=3"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(0.3)
            r = fuseraid("grow", mp, "--level", "10", "--layout", "f2", "--raid-devices", "4",
                         "--add", extras[0], "--speed-limit", "8M", "--wait")
            assert "reshape finished" in r.stdout
            deadline = time.monotonic() + 120
            while True:  # the resync that makes the far copies
                st = json.loads(fuseraid("status", "--json", mp).stdout)
                if st.get("in_sync") and not st.get("task"):
                    break
                assert time.monotonic() < deadline, st
                time.sleep(0.2)
            out, _ = fio.communicate(timeout=300)
        finally:
            if fio.poll() is None:
                fio.kill()
                fio.wait()
        assert fio.returncode == 0, out
        assert image.stat().st_size == 2 * 4 * MIB
        head = image.read_bytes()[: 6 * MIB]
    assert all(sb.is_clean for sb in superblocks(paths + extras))
    g, data, bad = read_array(paths + extras)
    assert (g.level, g.layout, g.raid_disks) == (10, F2, 4) and bad == 0
    assert data[: 6 * MIB] == head
