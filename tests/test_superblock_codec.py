"""The md v1.2 superblock codec against the superblocks real Linux md wrote (the
fixtures and their `mdadm --examine` text), a byte-level reference checksum, random
round trips, and every kind of damage decode must refuse."""

from __future__ import annotations

import calendar
import hashlib
import os
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fuseraid.errors import SuperblockError
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_FAULTY,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_NEW_OFFSET,
    MD_FEATURE_RECOVERY_OFFSET,
    MD_FEATURE_RESHAPE_ACTIVE,
    SB_OFFSET,
    Superblock,
    encode_time,
    format_uuid,
    read_superblock,
    time_seconds,
    time_usec,
    write_superblock,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_names() -> list[str]:
    # not imported from conftest: tests/interop has a conftest module of the same name
    return sorted(p.name for p in FIXTURES.iterdir() if (p / "meta.json").exists())
LEVELS = {"raid0": 0, "raid1": 1, "raid4": 4, "raid5": 5, "raid6": 6, "raid10": 10}


def parse_examine(text: str) -> dict[str, dict[str, str]]:
    """examine.txt -> {member file name: {label: value}}."""
    out: dict[str, dict[str, str]] = {}
    cur: dict[str, str] = {}
    for line in text.splitlines():
        if line.endswith(":") and " : " not in line:
            cur = out.setdefault(line[:-1], {})
        elif " : " in line:
            k, v = line.split(" : ", 1)
            cur[k.strip()] = v
    return out


def ref_csum(block: bytes, max_dev: int) -> int:
    """Reference for md's calc_sb_1_csum, written byte by byte from its definition."""
    size = 256 + 2 * max_dev
    data = bytearray(block[:size])
    data[216:220] = bytes(4)
    total = 0
    i = 0
    while size - i >= 4:
        total += data[i] | data[i + 1] << 8 | data[i + 2] << 16 | data[i + 3] << 24
        i += 4
    if size - i == 2:
        total += data[i] | data[i + 1] << 8
    return ((total % 2**32) + (total // 2**32)) % 2**32


def utc_seconds(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%a %b %d %H:%M:%S %Y"))


def test_header_offsets_match_md_p_h():
    # Offsets of struct mdp_superblock_1 from md_p.h, checked by setting one field.
    sb = Superblock(magic=0, major_version=0, super_offset=0)
    checks = {"feature_map": 8, "ctime": 64, "level": 72, "layout": 76, "size": 80,
              "chunksize": 88, "raid_disks": 92, "bitmap_offset": 96, "new_level": 100,
              "reshape_position": 104, "delta_disks": 112, "new_layout": 116,
              "new_chunk": 120, "new_offset": 124, "data_offset": 128, "data_size": 136,
              "super_offset": 144, "recovery_offset": 152, "dev_number": 160,
              "cnt_corrected_read": 164, "devflags": 184, "bblog_shift": 185,
              "bblog_size": 186, "bblog_offset": 188, "utime": 192, "events": 200,
              "resync_offset": 208, "sb_csum": 216, "max_dev": 220}
    for name, off in checks.items():
        s = sb.replace(**{name: 0x5A})
        s.dev_roles = [0] * s.max_dev
        raw = s.pack()
        assert raw[off] == 0x5A, name
        assert sum(raw[:256]) == 0x5A, name
    raw = sb.replace(set_uuid=b"U" * 16, set_name=b"N" * 32, device_uuid=b"D" * 16).pack()
    assert raw[16:32] == b"U" * 16 and raw[32:64] == b"N" * 32 and raw[168:184] == b"D" * 16
    roles = sb.replace(max_dev=3, dev_roles=[7, 0xFFFF, 0xFFFE]).pack()
    assert roles[256:262] == struct.pack("<3H", 7, 0xFFFF, 0xFFFE)
    assert len(roles) == 4096 and not any(roles[262:])


@pytest.mark.parametrize("name", fixture_names())
def test_fixture_members_decode_like_mdadm(name, md_fixture):
    meta, paths = md_fixture(name)
    exam = parse_examine((FIXTURES / name / "examine.txt").read_text())
    assert sorted(exam) == sorted(p.name for p in paths)
    for path in paths:
        e = exam[path.name]
        sb = read_superblock(path)
        raw = path.read_bytes()[SB_OFFSET : SB_OFFSET + 4096]
        # byte-exact round trip and the reference checksum
        assert sb.encode() == raw
        assert ref_csum(raw, sb.max_dev) == sb.sb_csum
        assert e["Checksum"] == f"{sb.sb_csum:x} - correct"
        assert e["Magic"] == f"{sb.magic:08x}"
        assert e["Version"] == "1.2" and sb.super_offset == 8
        assert e["Super Offset"] == f"{sb.super_offset} sectors"
        assert int(e["Feature Map"], 16) == sb.feature_map
        assert e["Array UUID"] == format_uuid(sb.set_uuid)
        assert e["Device UUID"] == format_uuid(sb.device_uuid)
        assert e["Name"] == sb.name
        assert LEVELS[e["Raid Level"]] == sb.level == meta["level"]
        assert int(e["Raid Devices"]) == sb.raid_disks == meta["raid_devices"]
        assert e["Avail Dev Size"].split()[0] == str(sb.data_size)
        assert e["Data Offset"] == f"{sb.data_offset} sectors"
        assert sb.data_offset == meta["data_offset_sectors"]
        assert sb.data_offset_bytes == sb.data_offset * 512
        assert int(e["Events"]) == sb.events
        assert utc_seconds(e["Creation Time"]) == time_seconds(sb.ctime)
        assert utc_seconds(e["Update Time"]) == time_seconds(sb.utime)
        assert (e["State"] == "clean") == sb.is_clean
        assert e["Device Role"] == f"Active device {sb.role}"
        assert sb.role == int(path.name[1:-4])  # the file names follow the roles
        state = "".join("A" if r in sb.dev_roles else "." for r in range(sb.raid_disks))
        assert e["Array State"].split()[0] == state
        bbl = e["Bad Block Log"].split()
        assert int(bbl[0]) == sb.bblog_size * 64 and int(bbl[5]) == sb.bblog_offset
        if meta["chunk_kib"]:
            assert e["Chunk Size"] == f"{meta['chunk_kib']}K"
            assert sb.chunk_bytes == meta["chunk_kib"] * 1024
        if meta["layout"] and sb.level != 0:
            assert sb.layout == meta["layout"]["number"]
        if "Array Size" in e:
            kib = int(e["Array Size"].split()[0])
            if not sb.reshape_active:
                assert kib * 1024 == meta["array_bytes"]
        if "Recovery Offset" in e:
            assert sb.feature_map & MD_FEATURE_RECOVERY_OFFSET
            assert e["Recovery Offset"] == f"{sb.recovery_offset} sectors"
        else:
            assert not sb.feature_map & MD_FEATURE_RECOVERY_OFFSET
        if "New Offset" in e:
            assert e["New Offset"] == f"{sb.new_data_offset} sectors"
        else:
            assert sb.new_data_offset == sb.data_offset
        if "Reshape pos'n" in e:
            assert int(e["Reshape pos'n"].split()[0]) == sb.reshape_position // 2
        else:
            assert not sb.reshape_active


def test_parked_reshape_fields(md_fixture):
    meta, paths = md_fixture("r5-4to5-left-symmetric-c64-grow-parked50")
    sbs = [read_superblock(p) for p in paths]
    for sb in sbs:
        assert sb.feature_map == MD_FEATURE_RESHAPE_ACTIVE | MD_FEATURE_NEW_OFFSET
        assert (sb.raid_disks, sb.delta_disks) == (5, 1)
        assert sb.reshape_position == 12288 and sb.reshape_position_bytes == 6 << 20
        assert (sb.data_offset, sb.new_offset, sb.new_data_offset) == (2048, -512, 1536)
        assert sb.new_data_offset_bytes == 1536 * 512
        assert (sb.level, sb.new_level, sb.layout, sb.new_layout) == (5, 5, 2, 2)
        assert sb.new_chunk == sb.chunksize == 128

    meta, paths = md_fixture("r5-4-to-r6-5-c64-parked50")
    sbs = [read_superblock(p) for p in paths]
    for role, sb in enumerate(sbs):
        assert sb.role == role
        assert (sb.level, sb.new_level, sb.raid_disks, sb.delta_disks) == (6, 6, 5, 0)
        assert (sb.layout, sb.new_layout) == (18, 2)
        assert sb.reshape_position == 9216
        assert sb.new_data_offset == 1024
    assert sbs[4].feature_map == 0x46 and sbs[4].recovery_offset == 3072
    assert sbs[4].recovery_offset_bytes == 3072 * 512
    assert all(sb.feature_map == 0x44 for sb in sbs[:4])


def test_time_and_union_helpers():
    stamp = encode_time(1795752299.25)
    assert time_seconds(stamp) == 1795752299 and time_usec(stamp) == 250000
    assert stamp == 1795752299 | 250000 << 40
    sb = Superblock(bitmap_offset=(8 << 16) | 0xFFF8)  # ppl size 8 at offset -8
    assert (sb.ppl_offset, sb.ppl_size) == (-8, 8)
    assert Superblock(recovery_offset=77).journal_tail == 77
    assert Superblock(resync_offset=MAX_SECTOR).resync_offset_bytes is None
    assert Superblock(resync_offset=10).resync_offset_bytes == 5120


# ---- random round trips ---------------------------------------------------------

_LAYOUTS = {0: [-1, 0, 1, 2], 1: [0], 4: [0, 5], 5: list(range(6)),
            6: [0, 1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 18, 19, 20],
            10: [0x102, 0x201, 0x10201, 0x103, 0x202, 0x301]}
_MIN = {0: 1, 1: 1, 4: 2, 5: 2, 6: 4, 10: 2}
u64 = st.integers(0, 2**64 - 1)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def superblocks(draw) -> Superblock:
    level = draw(st.sampled_from(sorted(_LAYOUTS)))
    raid_disks = draw(st.integers(_MIN[level], 40))
    max_dev = draw(st.integers(raid_disks, 300))
    roles = draw(st.lists(st.sampled_from([MD_DISK_ROLE_SPARE, MD_DISK_ROLE_FAULTY]),
                          min_size=max_dev, max_size=max_dev))
    for r in range(raid_disks):
        roles[draw(st.integers(0, max_dev - 1))] = r
    sb_end = 8 + -(-(256 + 2 * max_dev) // 512)
    bblog = draw(st.sampled_from([(0, 0), (8, 8), (16, 8)]))
    data_offset = draw(st.integers(max(sb_end, 8 + bblog[0] + bblog[1]), 2**40))
    data_size = draw(st.integers(10, 2**40))
    feature = draw(st.sampled_from([0, 0x2, 0x8, 0x10, 0x44, 0x46, 0x1000 * (level == 0)]))
    reshape = feature & MD_FEATURE_RESHAPE_ACTIVE
    name = draw(st.binary(max_size=32)).rstrip(b"\0")
    return Superblock(
        feature_map=feature,
        set_uuid=draw(st.binary(min_size=16, max_size=16)),
        set_name=name,
        ctime=draw(u64),
        level=level,
        layout=draw(st.sampled_from(_LAYOUTS[level])),
        size=0 if level == 0 else draw(st.integers(0, data_size)),
        chunksize=0 if level == 1 else 2 ** draw(st.integers(3, 16)),
        raid_disks=raid_disks,
        new_level=level if reshape else draw(st.integers(-(2**31), 2**31 - 1)),
        reshape_position=draw(u64),
        # the count before the reshape (raid_disks - delta_disks) is the old level's
        delta_disks=draw(st.integers(0, raid_disks - _MIN[level])) if reshape else draw(
            st.integers(-(2**31), 2**31 - 1)),
        new_layout=draw(st.sampled_from(_LAYOUTS[level])) if reshape else draw(u32) - 2**31,
        new_chunk=2 ** draw(st.integers(3, 16)) if reshape else draw(u32),
        new_offset=draw(st.integers(max(sb_end - data_offset, -(2**31)), 2**31 - 1)),
        bitmap_offset=draw(st.integers(-(2**31), 2**31 - 1)),
        data_offset=data_offset,
        data_size=data_size,
        recovery_offset=draw(u64),
        dev_number=draw(st.integers(0, max_dev - 1)),
        cnt_corrected_read=draw(u32),
        device_uuid=draw(st.binary(min_size=16, max_size=16)),
        devflags=draw(st.integers(0, 255)),
        bblog_shift=draw(st.integers(0, 255)),
        bblog_size=bblog[1],
        bblog_offset=bblog[0],
        utime=draw(u64),
        events=draw(u64),
        resync_offset=draw(u64),
        max_dev=max_dev,
        dev_roles=roles,
    )


@settings(max_examples=150, deadline=None)
@given(superblocks())
def test_random_round_trip(sb):
    raw = sb.encode()
    assert len(raw) == 4096
    assert ref_csum(raw, sb.max_dev) == sb.sb_csum
    back = Superblock.decode(raw, "m")
    assert back == sb
    assert back.encode() == raw


@settings(max_examples=150, deadline=None)
@given(superblocks(), st.data())
def test_any_changed_byte_is_refused(sb, data):
    raw = bytearray(sb.encode())
    at = data.draw(st.integers(0, 256 + 2 * sb.max_dev - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    with pytest.raises(SuperblockError) as ei:
        Superblock.decode(bytes(raw), "m7")
    assert "\n" not in str(ei.value) and str(ei.value).startswith("m7: ")


def test_odd_max_dev_checksum():
    sb = Superblock(level=1, raid_disks=1, max_dev=3, dev_roles=[0, 0xFFFF, 0xFFFF],
                    data_offset=2048, data_size=2048, size=2048)
    raw = sb.encode()
    assert ref_csum(raw, 3) == sb.sb_csum
    assert Superblock.decode(raw, "x") == sb


# ---- damage ------------------------------------------------------------------------


def _digest(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def _put(path: Path, raw: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(SB_OFFSET)
        f.write(raw)


def _corruptions(sb: Superblock):
    """(label, expected words in the message, bytes to store at 4096 or None, size)"""
    def enc(**kw):
        return sb.replace(**kw).encode(check=False)

    bad_csum = bytearray(sb.encode())
    bad_csum[40] ^= 1
    big_max_dev = bytearray(sb.encode())
    struct.pack_into("<I", big_max_dev, 220, 5000)
    roles = list(sb.dev_roles)
    roles[5] = 9
    return [
        ("magic", ["no md superblock", "magic 0x00000000 at 4096"], enc(magic=0), None),
        ("checksum", ["checksum"], bytes(bad_csum), None),
        ("major", ["major_version 2"], enc(major_version=2), None),
        ("super_offset", ["super_offset 0"], enc(super_offset=0), None),
        ("data_offset", ["data_offset 4"], enc(data_offset=4), None),
        ("max_dev", ["max_dev 5000"], bytes(big_max_dev), None),
        ("dev_number", ["dev_number 128"], enc(dev_number=128), None),
        ("level", ["level 7"], enc(level=7), None),
        ("raid_disks", ["raid_disks 1"], enc(raid_disks=1), None),
        ("layout", ["layout 7"], enc(layout=7), None),
        ("chunk", ["chunksize 0"], enc(chunksize=0), None),
        ("feature", ["feature_map"], enc(feature_map=0x8000), None),
        ("pad0", ["pad0"], enc(pad0=1), None),
        ("pad3", ["pad3"], enc(pad3=b"\1" + bytes(31)), None),
        ("role", ["dev_roles[5] = 9"], enc(dev_roles=roles), None),
        ("size", ["size 9999"], enc(size=9999), None),
        ("data_size", ["data_size 4"], enc(data_size=4), None),
        ("bblog", ["bblog_offset"], enc(bblog_offset=2040), None),
        ("new_offset", ["new_offset -2044"], enc(feature_map=0x44, new_offset=-2044,
                                                 reshape_position=8, new_level=5,
                                                 new_layout=2, new_chunk=128), None),
        ("raid0_layout", ["RAID0_LAYOUT"], enc(feature_map=0x1000), None),
        ("new_level", ["new_level 3"], enc(feature_map=0x4, new_level=3), None),
        ("delta", ["delta_disks 9"], enc(feature_map=0x4, new_level=5, new_layout=2,
                                         new_chunk=128, delta_disks=9), None),
        ("truncated data", ["truncated member", "data area"], None, 3 << 20),
        ("truncated sb", ["truncated member"], None, SB_OFFSET + 100),
        ("empty", ["truncated member"], None, 0),
    ]


def test_every_corruption_refused_in_one_line(md_fixture, capsys):
    from fuseraid.cli.main import main

    _, paths = md_fixture("r5-4-left-symmetric-c64")
    good = read_superblock(paths[0])
    pristine = paths[0].read_bytes()
    for label, words, raw, size in _corruptions(good):
        target = paths[0]
        target.write_bytes(pristine)
        if raw is not None:
            _put(target, raw)
        if size is not None:
            os.truncate(target, size)
        before = _digest(paths)
        with pytest.raises(SuperblockError) as ei:
            read_superblock(target)
        msg = str(ei.value)
        assert "\n" not in msg, label
        assert msg.startswith(f"{target}: "), (label, msg)
        for w in words:
            assert w in msg, (label, msg)
        # the CLI reports it as one line, exits 1 and changes nothing
        assert main(["examine", str(target)]) == 1, label
        out = capsys.readouterr()
        assert out.out == "" and out.err == f"fuseraid: {msg}\n", label
        assert _digest(paths) == before, label


def test_write_superblock_path_and_fd(tmp_path, md_fixture):
    _, paths = md_fixture("r1-2")
    sb = read_superblock(paths[0])
    target = tmp_path / "copy.img"
    target.write_bytes(b"\0" * (4 << 20))
    write_superblock(target, sb.replace(events=99))
    assert read_superblock(target).events == 99
    fd = os.open(target, os.O_RDWR)
    try:
        write_superblock(fd, sb.replace(events=100))
    finally:
        os.close(fd)
    back = read_superblock(target)
    assert back.events == 100
    assert back.replace(events=sb.events, sb_csum=sb.sb_csum) == sb
    # an invalid superblock is refused before anything is written
    digest = _digest([target])
    with pytest.raises(SuperblockError, match="level 3"):
        write_superblock(target, sb.replace(level=3))
    assert _digest([target]) == digest


def test_read_member_superblock(md_fixture, tmp_path):
    from fuseraid.member.device import Member
    from fuseraid.superblock.codec import read_member_superblock

    _, paths = md_fixture("r10-4-f2-c64")
    with Member(paths[2], readonly=True) as m:
        assert read_member_superblock(m) == read_superblock(paths[2])
    short = tmp_path / "short.img"
    short.write_bytes(bytes(4200))
    with Member(short, readonly=True) as m, pytest.raises(SuperblockError,
                                                          match="truncated member"):
        read_member_superblock(m)


def test_reshape_counts_checked_against_their_own_level():
    """While RESHAPE_ACTIVE, raid_disks - delta_disks is the old level's count and
    raid_disks the new level's: raid6 on 5 -> raid5 on 3 is recordable (md allows it),
    a new count below the NEW level's minimum is not."""
    base = Superblock.new(level=6, raid_disks=5, role=0, member_bytes=8 << 20,
                          dev_size=4 << 20, chunk=64 << 10, layout=2, data_offset=1 << 20,
                          set_uuid=b"u" * 16, ctime=0, name="t")
    ok = base.replace(feature_map=base.feature_map | MD_FEATURE_RESHAPE_ACTIVE,
                      raid_disks=3, delta_disks=-2, new_level=5, new_layout=2,
                      new_chunk=base.chunksize)
    assert Superblock.decode(ok.encode(name="t"), "t").raid_disks == 3
    bad = ok.replace(new_level=6, new_layout=2)
    with pytest.raises(SuperblockError, match="raid_disks 3 is impossible for raid6"):
        bad.encode(name="t")
    old_bad = ok.replace(delta_disks=0)  # the old raid6 on 3 disks
    with pytest.raises(SuperblockError, match="leaves 3 disks, too few for raid6"):
        old_bad.encode(name="t")
    plain = base.replace(raid_disks=3)  # no reshape: raid_disks is the level's
    with pytest.raises(SuperblockError, match="raid_disks 3 is impossible for raid6"):
        plain.encode(name="t")
