"""Geometry validation, sizes and mdadm's layout names."""

from __future__ import annotations

import re

import pytest
from mdfixtures import FIXTURES, fixture_names, load_meta

from fuseraid.errors import GeometryError
from fuseraid.layout import (
    DEFAULT_CHUNK,
    Geometry,
    ParityLayout,
    Raid0Layout,
    Raid1Layout,
    Raid10Layout,
    decode_raid10,
    default_layout,
    describe_layout,
    encode_raid10,
    layout_name,
    layout_number,
    make_layout,
)

K, M = 1024, 1024 * 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(level=3, raid_disks=4, layout=0, chunk=64 * K, dev_size=M), "unknown RAID level 3"),
        (dict(level=5, raid_disks=4, layout=7, chunk=64 * K, dev_size=M), "unknown raid5 layout 7"),
        (dict(level=5, raid_disks=4, layout=8, chunk=64 * K, dev_size=M), "unknown raid5 layout 8"),
        (dict(level=6, raid_disks=5, layout=11, chunk=64 * K, dev_size=M), "unknown raid6 layout"),
        (dict(level=5, raid_disks=4, layout=2, chunk=48 * K, dev_size=M), "power of two"),
        (dict(level=5, raid_disks=4, layout=2, chunk=2 * K, dev_size=M), ">= 4 KiB"),
        (dict(level=6, raid_disks=3, layout=2, chunk=64 * K, dev_size=M), "at least 4 disks"),
        (dict(level=5, raid_disks=1, layout=2, chunk=64 * K, dev_size=M), "at least 2 disks"),
        (dict(level=10, raid_disks=2, layout=0x103, chunk=64 * K, dev_size=M), "copies"),
        (dict(level=10, raid_disks=4, layout=0x101, chunk=64 * K, dev_size=M), "copies"),
        (dict(level=10, raid_disks=4, layout=1 << 19, chunk=64 * K, dev_size=M), "raid10 layout"),
        (dict(level=10, raid_disks=5, layout=0x10202, chunk=64 * K, dev_size=M), "unsafe"),
        (dict(level=1, raid_disks=2, layout=0, chunk=64 * K, dev_size=M), "no chunk"),
        (dict(level=5, raid_disks=4, layout=2, chunk=64 * K, dev_size=1000), "multiple of 512"),
        (dict(level=5, raid_disks=4, layout=2, chunk=64 * K, dev_size=32 * K), "one chunk"),
        (dict(level=0, raid_disks=3, layout=0, chunk=64 * K, dev_size=M,
              member_sizes=(M, 2 * M, 3 * M)), "multi-zone raid0"),
        (dict(level=0, raid_disks=3, layout=1, chunk=64 * K, dev_size=M,
              member_sizes=(M, M)), "3 disks but 2"),
        (dict(level=5, raid_disks=3, layout=2, chunk=64 * K, dev_size=M,
              member_sizes=(M, M, M)), "raid0 only"),
    ],
)
def test_bad_geometry_is_one_line_error(kwargs: dict, message: str) -> None:
    with pytest.raises(GeometryError, match=re.escape(message)) as e:
        Geometry(**kwargs)
    assert "\n" not in str(e.value)


def test_sizes_follow_md() -> None:
    # raid5: per-member size rounded down to the chunk, times data disks
    g = Geometry(5, 4, 2, 64 * K, 3 * M + 12 * K)
    assert (g.data_disks, g.array_size, g.dev_used) == (3, 9 * M, 3 * M)
    assert Geometry(6, 5, 2, 64 * K, 3 * M).array_size == 9 * M
    assert Geometry(1, 3, 0, 0, 3 * M).array_size == 3 * M
    # raid10 n2 over 3 disks: 3 x 3 MiB / 2
    g = Geometry(10, 3, 0x102, 64 * K, 3 * M)
    assert (g.array_size, g.copies) == (4608 * K, 2)
    # raid0: members rounded down to the chunk, then summed
    g = Geometry(0, 3, 1, 64 * K, 3 * M, (3 * M, 3 * M + 4 * K, 5 * M))
    assert g.array_size == 11 * M and g.role_sizes() == (3 * M, 3 * M, 5 * M)


def test_make_layout_picks_the_class() -> None:
    assert isinstance(make_layout(Geometry(0, 2, 0, 64 * K, M)), Raid0Layout)
    assert isinstance(make_layout(Geometry(1, 2, 0, 0, M)), Raid1Layout)
    assert isinstance(make_layout(Geometry(4, 3, 0, 64 * K, M)), ParityLayout)
    assert isinstance(make_layout(Geometry(5, 3, 2, 64 * K, M)), ParityLayout)
    assert isinstance(make_layout(Geometry(6, 4, 2, 64 * K, M)), ParityLayout)
    assert isinstance(make_layout(Geometry(10, 2, 0x102, 64 * K, M)), Raid10Layout)


def test_known_placements() -> None:
    # raid5 left-symmetric on 4 disks: P walks down from the last disk, data follows P
    lay = make_layout(Geometry(5, 4, 2, 64 * K, M))
    assert [(lay.row(r).p_role, lay.row(r).data_roles) for r in range(4)] == [
        (3, (0, 1, 2)), (2, (3, 0, 1)), (1, (2, 3, 0)), (0, (1, 2, 3))]
    # raid6 left-asymmetric, row 2 is D D P Q D: Q is computed starting after Q
    m = make_layout(Geometry(6, 5, 0, 64 * K, M)).row(2)
    assert (m.data_roles, m.p_role, m.q_role, m.q_slots, m.q_width) == (
        (0, 1, 4), 2, 3, (1, 2, 0), 3)
    # DDF: Q slot = role number, P and Q leave zero gaps
    m = make_layout(Geometry(6, 5, 10, 64 * K, M)).row(0)
    assert (m.data_roles, m.p_role, m.q_role, m.q_slots, m.q_width) == (
        (0, 1, 2), 4, 3, (0, 1, 2), 5)
    # raid4: parity always on the last role
    assert {make_layout(Geometry(4, 4, 0, 64 * K, M)).row(r).p_role for r in range(9)} == {3}


def test_range_checks() -> None:
    lay = make_layout(Geometry(5, 4, 2, 64 * K, M))
    with pytest.raises(GeometryError, match="outside the array"):
        lay.map(lay.array_size - 1, 2)
    with pytest.raises(GeometryError, match="outside the array"):
        lay.stripe_span(-1, 1)
    assert lay.map(5, 0) == []
    assert lay.block_at(0, lay.geometry.dev_used) is None
    with pytest.raises(GeometryError, match="role 4"):
        lay.block_at(4, 0)


def test_raid0_zones_and_layouts() -> None:
    # members 1, 2, 3 chunks: zones of 3, 2 and 1 chunks; original vs alternate
    # differ in zone 1 (two members) only
    c = 4 * K
    orig = Raid0Layout(Geometry(0, 3, 1, c, c, (c, 2 * c, 3 * c)))
    alt = Raid0Layout(Geometry(0, 3, 2, c, c, (c, 2 * c, 3 * c)))
    assert [(z.array_start // c, z.array_end // c, z.dev_start // c, z.roles)
            for z in orig.zones] == [(0, 3, 0, (0, 1, 2)), (3, 5, 1, (1, 2)), (5, 6, 2, (2,))]
    # zone 1, first chunk: array chunk 3 -> 3 % 2 = role 2 (original) vs 0 % 2 = role 1
    assert orig.map(3 * c, c)[0].copies == ((2, c),)
    assert alt.map(3 * c, c)[0].copies == ((1, c),)
    assert orig.map(5 * c, 1)[0].copies == alt.map(5 * c, 1)[0].copies == ((2, 2 * c),)


def test_stripe_sizes() -> None:
    assert make_layout(Geometry(5, 4, 2, 64 * K, M)).stripe_size == 192 * K
    assert make_layout(Geometry(0, 3, 0, 64 * K, M)).stripe_size == 192 * K
    assert make_layout(Geometry(10, 4, 0x102, 64 * K, M)).stripe_size == 128 * K
    assert make_layout(Geometry(10, 3, 0x102, 64 * K, M)).stripe_size == 192 * K
    assert make_layout(Geometry(1, 2, 0, 0, M)).stripe_span(700, 10) == (512, 1024)


# ---------------------------------------------------------------- names


def test_defaults() -> None:
    assert DEFAULT_CHUNK == 512 * K
    assert default_layout(5) == default_layout(6) == 2
    assert default_layout(10) == 0x102
    assert layout_name(10, default_layout(10)) == "n2"


@pytest.mark.parametrize(
    ("level", "name", "number"),
    [
        (5, "left-asymmetric", 0), (5, "right-asymmetric", 1), (5, "left-symmetric", 2),
        (5, "right-symmetric", 3), (5, "parity-first", 4), (5, "parity-last", 5),
        (6, "ddf-zero-restart", 8), (6, "ddf-N-restart", 9), (6, "ddf-N-continue", 10),
        (6, "left-asymmetric-6", 16), (6, "right-asymmetric-6", 17),
        (6, "left-symmetric-6", 18), (6, "right-symmetric-6", 19), (6, "parity-first-6", 20),
        (10, "n2", 0x102), (10, "f2", 0x201), (10, "o2", 0x10201), (10, "n3", 0x103),
        (0, "original", 1), (0, "alternate", 2),
    ],
)
def test_names_round_trip(level: int, name: str, number: int) -> None:
    assert layout_number(level, name) == number
    assert layout_name(level, number) == name


def test_name_aliases_and_errors() -> None:
    assert layout_number(5, "ls") == layout_number(5, "default") == 2
    assert layout_number(5, "ddf-N-continue") == 2  # mdadm's raid5 alias
    for level, bad in ((5, "left-symmetric-6"), (6, "nonsense"), (10, "x2"), (10, "n"),
                       (1, "n2")):
        with pytest.raises(GeometryError):
            layout_number(level, bad)
    assert describe_layout(10, encode_raid10(2, 2)) == "near=2, far=2"
    assert describe_layout(10, 0x10201) == "offset=2"
    assert describe_layout(5, 99) == "unknown (99)"
    assert decode_raid10(0x20201).far_set_mode == 1


@pytest.mark.parametrize("name", fixture_names())
def test_names_match_what_mdadm_printed(name: str) -> None:
    """Our numbers and human names against the fixtures' meta.json and examine.txt."""
    meta = load_meta(name)
    if not meta["layout"] or meta["layout"]["number"] is None:
        return
    level, number, mdadm_name = meta["level"], meta["layout"]["number"], meta["layout"]["mdadm"]
    if mdadm_name is None or "->" in str(mdadm_name):
        return
    assert layout_number(level, mdadm_name) == number
    examine = (FIXTURES / name / "examine.txt").read_text()
    printed = re.search(r"^\s+Layout : (.+)$", examine, re.M)
    assert printed is not None
    assert describe_layout(level, number) == printed.group(1).strip()
