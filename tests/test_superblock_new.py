"""Superblocks built with Superblock.new, written into fresh files, as Debian's mdadm
reads them (`mdadm --examine FILE`), and mdadm's default data offset."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from fuseraid.errors import SuperblockError
from fuseraid.superblock.codec import (
    MAX_SECTOR,
    MD_DISK_ROLE_SPARE,
    MD_FEATURE_RAID0_LAYOUT,
    Superblock,
    default_data_offset,
    format_uuid,
    make_set_name,
    read_superblock,
    write_superblock,
)
from fuseraid.superblock.examine import render

MiB = 1 << 20
mdadm = shutil.which("mdadm")
needs_mdadm = pytest.mark.skipif(mdadm is None, reason="mdadm not installed")

# level, raid_disks, layout, chunk, examine's Layout line (None = none printed)
CASES = [
    (0, 3, 0, 64 << 10, None),
    (0, 3, 2, 64 << 10, "alternate"),
    (1, 2, 0, 0, None),
    (4, 4, 0, 64 << 10, None),
    (5, 4, 2, 64 << 10, "left-symmetric"),
    (5, 5, 5, 128 << 10, "parity-last"),
    (6, 5, 10, 64 << 10, "ddf-N-continue"),
    (6, 6, 18, 256 << 10, "left-symmetric-6"),
    (10, 4, 0x201, 64 << 10, "far=2"),
    (10, 3, 0x10201, 64 << 10, "offset=2"),
]


def _examine(path) -> dict[str, str]:
    res = subprocess.run([mdadm, "--examine", str(path)], capture_output=True, text=True,
                         env={"TZ": "UTC", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
                         timeout=30)
    assert res.returncode == 0, res.stderr
    out = {}
    for line in res.stdout.splitlines():
        if " : " in line:
            k, v = line.split(" : ", 1)
            out[k.strip()] = v
    return out | {"_text": res.stdout}


def test_default_data_offset_matches_mdadm():
    # the fixtures (mdadm 4.2): 4 MiB members -> 2048 sectors, 6 MiB with 512K -> 4096
    assert default_data_offset(4 * MiB, 64 << 10) == 2048 * 512
    assert default_data_offset(4 * MiB, 0) == 2048 * 512
    assert default_data_offset(6 * MiB, 512 << 10) == 4096 * 512
    # the well known offset of big disks: 128 MiB headroom + bitmap space -> 264192 sectors
    assert default_data_offset(1 << 40, 512 << 10) == 264192 * 512
    # headroom is about 0.1% of the member in between
    assert default_data_offset(8 << 30, 512 << 10) == 18432 * 512


@needs_mdadm
@pytest.mark.parametrize("level,disks,layout,chunk,lname", CASES)
def test_new_superblock_reads_in_mdadm(tmp_path, level, disks, layout, chunk, lname):
    member = 4 * MiB
    doff = default_data_offset(member, chunk)
    dev_size = 0 if level == 0 else (member - doff) // max(chunk, 4096) * max(chunk, 4096)
    uuid = bytes(range(16))
    sbs = []
    for role in range(disks):
        sb = Superblock.new(level=level, raid_disks=disks, role=role, member_bytes=member,
                            dev_size=dev_size, chunk=chunk, layout=layout, name="tst",
                            homehost="hostx", set_uuid=uuid, ctime=1795233899, events=5)
        path = tmp_path / f"m{role}.img"
        path.write_bytes(b"")
        with open(path, "r+b") as f:
            f.truncate(member)
        write_superblock(path, sb)
        assert read_superblock(path) == sb
        sbs.append(sb)
        e = _examine(path)
        assert e["Raid Level"] == f"raid{level}"
        assert e["Raid Devices"] == str(disks)
        assert e["Array UUID"] == format_uuid(uuid) == "00010203:04050607:08090a0b:0c0d0e0f"
        assert e["Events"] == "5"
        assert e["Data Offset"] == f"{doff // 512} sectors"
        assert e["Checksum"] == f"{sb.sb_csum:x} - correct"
        assert e["Device Role"] == f"Active device {role}"
        assert e["Array State"].split()[0] == "A" * disks
        assert e["Name"] == "hostx:tst"
        assert e["State"] == "clean"
        assert e["Creation Time"] == "Sat Nov 21 04:04:59 2026"
        if chunk:
            assert e["Chunk Size"] == f"{chunk >> 10}K"
        assert e.get("Layout") == lname
        # and our examine prints exactly what mdadm prints
        assert render(sb, str(path), device_size=member, homehost="") == e["_text"]
    assert len({sb.device_uuid for sb in sbs}) == disks
    if level == 0 and layout:
        assert sbs[0].feature_map == MD_FEATURE_RAID0_LAYOUT


def test_new_defaults_like_mdadm():
    sb = Superblock.new(level=5, raid_disks=4, role=3, member_bytes=4 * MiB,
                        dev_size=3 * MiB, chunk=64 << 10, layout=2, homehost="h")
    assert sb.max_dev == 128 and sb.dev_roles[:5] == [0, 1, 2, 3, MD_DISK_ROLE_SPARE]
    assert sb.dev_number == 3 and sb.role == 3
    assert (sb.data_offset, sb.data_size, sb.size) == (2048, 6144, 6144)
    assert (sb.bblog_offset, sb.bblog_size) == (16, 8)
    assert sb.resync_offset == MAX_SECTOR and sb.events == 0
    assert sb.name == "h:0" and sb.ctime == sb.utime
    r0 = Superblock.new(level=0, raid_disks=2, role=0, member_bytes=4 * MiB, dev_size=0,
                        chunk=64 << 10)
    assert (r0.bblog_offset, r0.size, r0.feature_map) == (8, 0, 0)
    dirty = Superblock.new(level=1, raid_disks=2, role=1, member_bytes=4 * MiB,
                           dev_size=3 * MiB, clean=False)
    assert dirty.resync_offset == 0 and not dirty.is_clean
    assert Superblock.new(level=1, raid_disks=200, role=0, member_bytes=4 * MiB,
                          dev_size=MiB).max_dev == 384


def test_new_degraded_like_mdadm(md_fixture):
    # mdadm --create ... missing: the missing role's slot is a spare entry
    _, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    from fuseraid.superblock.codec import read_superblock as rd

    real = rd(paths[2])
    ours = Superblock.new(level=5, raid_disks=4, role=3, member_bytes=4 * MiB + 100,
                          dev_size=3 * MiB, chunk=64 << 10, layout=2, missing={2})
    assert ours.dev_roles == real.dev_roles and ours.role == real.role == 3
    assert (ours.data_offset, ours.data_size, ours.bblog_offset, ours.max_dev) == (
        real.data_offset, real.data_size, real.bblog_offset, real.max_dev)
    with pytest.raises(SuperblockError, match="not role 2"):
        Superblock.new(level=5, raid_disks=4, role=2, member_bytes=4 * MiB,
                       dev_size=3 * MiB, chunk=64 << 10, layout=2, missing={2})


def test_set_name_rules():
    assert make_set_name("data", "host") == "host:data"
    assert make_set_name("other:data", "host") == "other:data"
    assert make_set_name("n" * 30, "host") == "n" * 30  # host:name would not fit
    assert make_set_name("", "h") == "h:0"


def test_new_refuses_bad_input():
    with pytest.raises(SuperblockError, match="too small"):
        Superblock.new(level=1, raid_disks=2, role=0, member_bytes=MiB, dev_size=0)
    with pytest.raises(SuperblockError, match="whole number of sectors"):
        Superblock.new(level=1, raid_disks=2, role=0, member_bytes=4 * MiB, dev_size=100)
    with pytest.raises(SuperblockError, match="raid_disks 3 is impossible for raid6"):
        Superblock.new(level=6, raid_disks=3, role=0, member_bytes=4 * MiB, dev_size=MiB,
                       chunk=65536)
    with pytest.raises(SuperblockError, match="size"):
        Superblock.new(level=1, raid_disks=2, role=0, member_bytes=4 * MiB,
                       dev_size=4 * MiB)
