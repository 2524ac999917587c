"""Level drivers on the arrays real Linux md wrote (tests/fixtures): they read md's bytes,
scrub clean, and writing the same content onto blank members reproduces md's members
byte for byte. Geometry and slots come from meta.json, not from the superblock codec."""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from pathlib import Path

import pytest

from fuseraid.engine.levels import Driver, Slot, make_driver
from fuseraid.layout import Geometry
from tests.conftest import fixture_names
from tests.model import Member, blank_file
from tests.pattern import secpat

NAMES = [n for n in fixture_names() if not n.endswith("parked50")]
STEP = 1 << 20  # read and write in 1 MiB requests, as the engine would


def geometry_of(meta: dict) -> Geometry:
    """md's geometry from meta.json (what the superblocks say, in bytes)."""
    offset = meta["data_offset_sectors"] * 512
    sizes = meta["member_bytes"]
    avail = (
        [sizes[f] - offset for f in meta["members"]]
        if isinstance(sizes, dict)
        else [sizes - offset] * meta["raid_devices"]
    )
    level = meta["level"]
    chunk = (meta["chunk_kib"] or 0) * 1024
    layout = (meta["layout"] or {}).get("number") or 0
    if level == 0 and len(set(avail)) > 1:
        return Geometry(0, meta["raid_devices"], layout, chunk, avail[0], tuple(avail))
    # md's sb "size": the data area rounded down to the chunk (raid1: 64 KiB)
    unit = chunk or 64 * 1024
    return Geometry(level, meta["raid_devices"], layout, chunk, min(avail) // unit * unit)


def open_slots(meta: dict, paths: list[Path], stack: ExitStack) -> list[Slot | None]:
    by_name = {p.name: p for p in paths}
    offset = meta["data_offset_sectors"] * 512
    slots: list[Slot | None] = []
    for name in meta["members"]:
        if name == "missing":
            slots.append(None)
            continue
        member = Member(by_name[name])
        stack.callback(member.close)
        slots.append(Slot(member, offset))
    return slots


def sha_of(drv: Driver) -> str:
    h = hashlib.sha256()
    for off in range(0, drv.size, STEP):
        h.update(drv.read(off, min(STEP, drv.size - off)))
    return h.hexdigest()


def write_pattern(drv: Driver, seed: int, step: int = STEP) -> None:
    for off in range(0, drv.size, step):
        n = min(step, drv.size - off)
        drv.write(off, secpat(seed, n, off))


@pytest.mark.parametrize("name", NAMES)
def test_fixture_reads_and_scrubs_like_md(md_fixture, name: str) -> None:
    meta, paths = md_fixture(name)
    g = geometry_of(meta)
    with ExitStack() as stack:
        drv = make_driver(g, open_slots(meta, paths, stack))
        assert drv.size == meta["array_bytes"]
        assert sha_of(drv) == meta["array_sha256"]
        # unaligned reads too (they cross chunks, rows and zones)
        for off, n in ((123_456, 200_001), (drv.size - 70_001, 70_001), (65_535, 2)):
            assert drv.read(off, n) == secpat(1, n, off)
        if meta["mismatch_cnt"] is not None:
            assert drv.scrub(0, drv.rows) == meta["mismatch_cnt"]

        # new content through the driver: reads back, parity stays consistent
        write_pattern(drv, 2, step=STEP - 4096 * 3 + 512)  # unaligned: rmw and rcw mixed
        assert drv.read(0, drv.size) == secpat(2, drv.size)
        if meta["mismatch_cnt"] is not None:
            assert drv.scrub(0, drv.rows) == 0
        drv.flush()


@pytest.mark.parametrize("name", [n for n in NAMES if "degraded" not in n])
def test_writing_md_content_reproduces_md_members(md_fixture, tmp_path: Path, name) -> None:
    """secpat(1) written onto blank members gives md's data, parity, Q and mirror bytes."""
    meta, paths = md_fixture(name)
    g = geometry_of(meta)
    offset = meta["data_offset_sectors"] * 512
    by_name = {p.name: p for p in paths}
    with ExitStack() as stack:
        slots: list[Slot | None] = []
        for name_ in meta["members"]:
            blank = blank_file(tmp_path / f"blank-{name_}", by_name[name_].stat().st_size)
            member = Member(blank)
            stack.callback(member.close)
            slots.append(Slot(member, offset))
        drv = make_driver(g, slots)
        write_pattern(drv, 1)
        drv.flush()
        used = g.dev_used
        for name_, slot in zip(meta["members"], slots, strict=True):
            assert slot is not None
            with open(by_name[name_], "rb") as f:
                f.seek(offset)
                want = f.read(g.member_sizes[meta["members"].index(name_)]
                              if g.member_sizes else used)
            got = slot.member.pread(offset, len(want))
            assert got == want, f"{name}: member {name_} differs from md's"


def test_degraded_fixture_rebuilds_to_a_clean_array(md_fixture, tmp_path: Path) -> None:
    """The array md wrote with role 2 missing: re-add a blank member, rebuild, scrub 0."""
    meta, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    g = geometry_of(meta)
    with ExitStack() as stack:
        slots = open_slots(meta, paths, stack)
        drv = make_driver(g, slots)
        member = Member(blank_file(tmp_path / "new-d2.img", paths[0].stat().st_size))
        stack.callback(member.close)
        slots[2] = Slot(member, meta["data_offset_sectors"] * 512)
        for start in range(0, drv.rows, 8):  # the caller chunks maintenance
            drv.rebuild(2, start, min(start + 8, drv.rows))
        assert drv.scrub(0, drv.rows) == 0
        assert sha_of(drv) == meta["array_sha256"]
