"""create: mdadm-compatible superblocks, initial sync, refusals, and the CLI."""

from __future__ import annotations

import hashlib
import random
import subprocess
from pathlib import Path

import pytest
from mdfixtures import load_meta
from pattern import secpat

from fuseraid.cli.main import main
from fuseraid.cli.sizes import parse_size
from fuseraid.engine.assemble import open_array
from fuseraid.engine.create import create, parse_level
from fuseraid.errors import FuseraidError
from fuseraid.superblock.codec import MAX_SECTOR, format_uuid, read_superblock

MiB = 1 << 20


def members(tmp_path: Path, n: int, size: int = 4 * MiB, garbage: bool = True,
            sizes: list[int] | None = None) -> list[str]:
    """Member files full of random bytes (so the initial sync has real work to do)."""
    rng = random.Random(n * 7919 + size)
    out = []
    for i in range(n):
        p = tmp_path / f"m{i}.img"
        sz = sizes[i] if sizes else size
        p.write_bytes(rng.randbytes(sz) if garbage else b"\0" * sz)
        out.append(str(p))
    return out


def hashes(paths) -> dict[str, str]:
    return {p: hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


def examine(path: str) -> dict[str, str]:
    out = subprocess.run(["mdadm", "--examine", path], capture_output=True, text=True,
                         check=True).stdout
    fields = {}
    for line in out.splitlines():
        if " : " in line:
            k, v = line.split(" : ", 1)
            fields[k.strip()] = v.strip()
    if "Array State" in fields:
        fields["Array State"] = fields["Array State"].split()[0]
    return fields


CASES = [
    (0, 3, None, 64),
    (1, 2, None, None),
    (1, 3, None, None),
    (4, 4, None, 64),
    (5, 4, "left-asymmetric", 64),
    (5, 3, "parity-first", 32),
    (5, 4, None, None),
    (6, 5, "ddf-zero-restart", 64),
    (6, 4, "left-symmetric-6", 16),
    (6, 5, "right-symmetric", 64),
    (10, 4, "f2", 64),
    (10, 3, "n2", 64),
    (10, 4, "o2", 64),
]


@pytest.mark.parametrize("level,n,layout,chunk_kib", CASES)
async def test_create_assemble_examine(tmp_path, level, n, layout, chunk_kib):
    size = 6 * MiB if chunk_kib is None and level != 1 else 4 * MiB
    paths = members(tmp_path, n, size)
    chunk = chunk_kib * 1024 if chunk_kib else None
    await create(paths, level=level, raid_disks=n, chunk=chunk, layout=layout, name="t")
    sbs = [read_superblock(p) for p in paths]
    assert len({sb.set_uuid for sb in sbs}) == 1 and len({sb.events for sb in sbs}) == 1
    for role, (p, sb) in enumerate(zip(paths, sbs, strict=True)):
        ex = examine(p)
        assert ex["Raid Level"] == f"raid{level}"
        assert ex["Raid Devices"] == str(n)
        assert ex["Array UUID"] == format_uuid(sb.set_uuid)
        assert ex["Events"] == str(sb.events)
        assert ex["Data Offset"] == f"{sb.data_offset} sectors"
        assert ex["State"] == "clean"
        assert ex["Device Role"] == f"Active device {role}"
        assert ex["Array State"] == "A" * n
        if level != 1:
            want = chunk_kib or 512
            assert ex["Chunk Size"] == f"{want}K"
        if layout is not None:
            shown = {"f2": "far=2", "n2": "near=2", "o2": "offset=2"}.get(layout, layout)
            assert ex["Layout"] == shown
        elif level == 5:
            assert ex["Layout"] == "left-symmetric"
    async with open_array(paths[::-1]) as array:
        assert array.geometry.level == level and array.geometry.raid_disks == n
        assert await array.check() == 0  # the initial sync made parity/mirrors agree
        data = secpat(5, array.size)
        for off in range(0, array.size, MiB):
            await array.write(off, data[off : off + MiB])
        assert await array.read(0, array.size) == data
        assert await array.check() == 0


@pytest.mark.parametrize("fixture", ["r5-4-left-symmetric-c64", "r5-4-left-symmetric-c512",
                                     "r1-2", "r0-3-c64"])
async def test_data_offset_and_size_like_mdadm(tmp_path, fixture):
    meta = load_meta(fixture)
    size = meta["member_bytes"]
    paths = members(tmp_path, meta["raid_devices"], size, garbage=False)
    chunk = meta["chunk_kib"] * 1024 if meta["chunk_kib"] else None
    await create(paths, level=meta["level"], raid_disks=meta["raid_devices"], chunk=chunk,
                 assume_clean=True)
    sb = read_superblock(paths[0])
    assert sb.data_offset == meta["data_offset_sectors"]
    async with open_array(paths, readonly=True) as array:
        assert array.size == meta["array_bytes"]


async def test_raid0_unequal_members_make_zones(tmp_path):
    meta = load_meta("r0-3-c64-unequal-4-4-6M")
    paths = members(tmp_path, 3, sizes=[4 * MiB, 4 * MiB, 6 * MiB], garbage=False)
    await create(paths, level=0, raid_disks=3, chunk=64 * 1024)
    sb = read_superblock(paths[0])
    assert sb.layout == 1 and sb.feature_map & 0x1000  # md's RAID0_LAYOUT, "original"
    async with open_array(paths) as array:
        assert array.size == meta["array_bytes"]


async def test_unequal_members_use_smallest_and_warn(tmp_path):
    paths = members(tmp_path, 3, sizes=[4 * MiB, 5 * MiB, 4 * MiB], garbage=False)
    warnings: list[str] = []
    await create(paths, level=5, raid_disks=3, chunk=64 * 1024, warn=warnings.append)
    assert len(warnings) == 1 and "smallest" in warnings[0]
    async with open_array(paths) as array:
        assert array.size == 2 * 3 * MiB


async def test_degraded_create_with_missing(tmp_path):
    paths = members(tmp_path, 3)
    await create([paths[0], "missing", paths[1], paths[2]], level=6, raid_disks=4,
                 chunk=64 * 1024)
    assert examine(paths[0])["Array State"] == "A.AA"
    async with open_array(paths) as array:
        assert array.status()["state"] == "degraded"
        data = secpat(3, array.size)
        await array.write(0, data)
        assert await array.read(0, array.size) == data
    (tmp_path / "x").mkdir()
    extra = members(tmp_path / "x", 1)
    async with open_array(paths) as array:
        await array.add(extra[0])
        await array.wait_idle()
        assert await array.check() == 0
        assert await array.read(0, array.size) == data


async def test_assume_clean_skips_the_sync(tmp_path):
    paths = members(tmp_path, 4)
    await create(paths, level=5, raid_disks=4, chunk=64 * 1024, assume_clean=True)
    assert all(read_superblock(p).resync_offset == MAX_SECTOR for p in paths)
    async with open_array(paths, readonly=True) as array:
        assert await array.check() > 0  # random members: parity never computed


# ---- refusals: one line, nothing written ------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    ({"level": 7, "raid_disks": 4}, "unknown RAID level"),
    ({"level": "raid5", "raid_disks": 4, "layout": "sideways"}, "layout"),
    ({"level": 10, "raid_disks": 4, "layout": "x2"}, "layout"),
    ({"level": 5, "raid_disks": 5}, "members given"),
    ({"level": 6, "raid_disks": 3}, "at least 4"),
    ({"level": 5, "raid_disks": 4, "chunk": 3 * 4096}, "power of two"),
    ({"level": 5, "raid_disks": 4, "chunk": 2048}, "power of two"),
])
async def test_bad_input_refused(tmp_path, kw, match):
    paths = members(tmp_path, 4 if kw["raid_disks"] != 3 else 3)
    before = hashes(paths)
    with pytest.raises(FuseraidError, match=match) as info:
        await create(paths, **kw)
    assert "\n" not in str(info.value)
    assert hashes(paths) == before


async def test_too_many_missing_refused(tmp_path):
    paths = members(tmp_path, 2)
    before = hashes(paths)
    with pytest.raises(FuseraidError, match="missing"):
        await create([paths[0], "missing", "missing", paths[1]], level=5, raid_disks=4)
    assert hashes(paths) == before


async def test_member_too_small_refused(tmp_path):
    paths = members(tmp_path, 3, size=4 * MiB)
    small = tmp_path / "small.img"
    small.write_bytes(b"\0" * 512 * 1024)
    before = hashes([*paths, str(small)])
    with pytest.raises(FuseraidError, match="too small"):
        await create([*paths, str(small)], level=5, raid_disks=4, chunk=64 * 1024)
    assert hashes([*paths, str(small)]) == before


async def test_existing_array_refused_unless_forced(tmp_path):
    paths = members(tmp_path, 3)
    await create(paths, level=1, raid_disks=3, assume_clean=True)
    before = hashes(paths)
    with pytest.raises(FuseraidError, match="already belongs"):
        await create(paths, level=5, raid_disks=3, chunk=64 * 1024)
    assert hashes(paths) == before
    await create(paths, level=5, raid_disks=3, chunk=64 * 1024, force=True)
    assert read_superblock(paths[0]).level == 5


async def test_duplicate_member_refused(tmp_path):
    paths = members(tmp_path, 2)
    with pytest.raises(FuseraidError, match="twice"):
        await create([paths[0], paths[1], paths[0]], level=5, raid_disks=3)


def test_parse_helpers():
    assert parse_size("64") == 64 * 1024
    assert parse_size("64K") == parse_size("64k") == 65536
    assert parse_size("1M") == MiB and parse_size("2G") == 2 << 30
    with pytest.raises(FuseraidError):
        parse_size("12Q")
    assert parse_size("1T") == 1 << 40 and parse_size("64KiB") == parse_size("64kb") == 65536
    assert parse_size("4096", default_unit=1) == 4096
    for bad in ("0", "0K", "-1", "1.5M", "", "K", "64B"):
        with pytest.raises(FuseraidError):
            parse_size(bad)
    assert parse_size("0", allow_zero=True) == 0
    assert parse_level("raid6") == parse_level("6") == parse_level(6) == 6

    with pytest.raises(FuseraidError):
        parse_level("raid3")


# ---- the CLI ------------------------------------------------------------------------------


def test_cli_create(tmp_path, capsys):
    paths = members(tmp_path, 4)
    rc = main(["create", "--level", "5", "--raid-devices", "4", "--chunk", "32K",
               "--layout", "right-asymmetric", "--name", "cli", *paths])
    assert rc == 0
    ex = examine(paths[0])
    assert ex["Layout"] == "right-asymmetric" and ex["Chunk Size"] == "32K"
    assert ex["Name"].split()[0].endswith(":cli")
    before = hashes(paths)
    rc = main(["create", "-l", "5", "-n", "4", *paths])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("fuseraid: ") and err.count("\n") == 1
    assert hashes(paths) == before


async def test_create_takes_bytes_not_text(tmp_path):
    paths = members(tmp_path, 3)
    with pytest.raises(TypeError):  # sizes are parsed by the CLI (fuseraid.cli.sizes)
        await create(paths, level=5, raid_disks=3, chunk="64K")
