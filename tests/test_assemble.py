"""Assembly of the md fixtures (any member order) and refusal of bad member sets."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import random
import shutil
import struct
from pathlib import Path

import pytest
import trio
from mdfixtures import fixture_names, load_meta

from fuseraid.engine.assemble import assemble, open_array
from fuseraid.errors import FuseraidError
from fuseraid.superblock.codec import SB_OFFSET, Superblock, read_superblock

HAVE_RESUME = importlib.util.find_spec("fuseraid.migration.resume") is not None
PLAIN = [n for n in fixture_names() if "parked50" not in n]
RESHAPING = [n for n in fixture_names() if "parked50" in n]


def file_hashes(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths}


async def read_all(array, step: int = 1 << 20) -> bytes:
    out = bytearray()
    while True:
        chunk = await array.read(len(out), step)
        if not chunk:
            return bytes(out)
        out += chunk


def shuffled(paths: list[Path], seed: int) -> list[Path]:
    out = list(paths)
    random.Random(seed).shuffle(out)
    return out


@pytest.mark.parametrize("name", PLAIN)
async def test_fixture_reads_like_md(md_fixture, name):
    meta, paths = md_fixture(name)
    before = file_hashes(paths)
    async with open_array(shuffled(paths, len(name)), readonly=True) as array:
        assert array.size == meta["array_bytes"]
        data = await read_all(array)
        assert hashlib.sha256(data).hexdigest() == meta["array_sha256"]
        if meta["mismatch_cnt"] is not None:
            assert await array.check() == meta["mismatch_cnt"] == 0
        st = array.status()
        assert st["level"] == meta["level"]
        assert st["raid_disks"] == meta["raid_devices"]
        assert [m["state"] for m in st["members"]].count("missing") == meta["members"].count(
            "missing")
    assert file_hashes(paths) == before  # read-only wrote nothing


@pytest.mark.skipif(not HAVE_RESUME, reason="no reshape support in this build")
@pytest.mark.parametrize("name", RESHAPING)
async def test_reshaping_fixture_reads_like_md(md_fixture, name):
    meta, paths = md_fixture(name)
    # mid-reshape: the migration's entry point (the engine alone refuses these members)
    from fuseraid.migration import open_array
    async with open_array(shuffled(paths, 3), readonly=True) as array:
        data = await array.read(0, meta["array_bytes"])
        assert hashlib.sha256(data).hexdigest() == meta["array_sha256"]


@pytest.mark.parametrize("name", PLAIN)
async def test_write_read_back_and_reopen(md_fixture, name):
    from pattern import secpat

    meta, paths = md_fixture(name)
    size = meta["array_bytes"]
    new = secpat(99, size)
    async with open_array(paths) as array:
        for off in range(0, size, 300_000):  # unaligned pieces
            await array.write(off, new[off : off + 300_000])
        assert await read_all(array) == new
        if "degraded" not in name:
            assert await array.check() == 0
    async with open_array(shuffled(paths, 1)) as array:
        assert await read_all(array) == new
        if "degraded" not in name:
            assert await array.check() == 0
    sbs = [read_superblock(p) for p in paths]
    assert len({sb.events for sb in sbs}) == 1
    assert all(sb.is_clean for sb in sbs)


# ---- refusals: one line, nothing written ---------------------------------------------


async def refused(paths, match: str, **kw) -> str:
    before = file_hashes([p for p in set(map(Path, paths))])
    with pytest.raises(FuseraidError, match=match) as info:
        await assemble([str(p) for p in paths], **kw)
    msg = str(info.value)
    assert "\n" not in msg and msg
    assert file_hashes([p for p in set(map(Path, paths))]) == before
    return msg


async def test_truncated_member_refused(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    os.truncate(paths[2], 3 << 20)
    msg = await refused(paths, "truncated")
    assert str(paths[2]) in msg


async def test_corrupt_superblock_refused(md_fixture):
    _, paths = md_fixture("r6-5-left-symmetric-c64")
    with open(paths[1], "r+b") as f:
        f.seek(SB_OFFSET + 100)
        b = f.read(1)
        f.seek(SB_OFFSET + 100)
        f.write(bytes([b[0] ^ 0x40]))
    msg = await refused(paths, "checksum")
    assert str(paths[1]) in msg


async def test_member_of_another_array_refused(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    _, others = md_fixture("r5-4-left-asymmetric-c64")
    msg = await refused([*paths[:3], others[3]], "another array")
    assert str(others[3]) in msg


async def test_duplicate_member_refused(md_fixture, tmp_path):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    await refused([paths[0], paths[1], paths[2], paths[0]], "given twice")
    copy = tmp_path / "copy.img"
    shutil.copyfile(paths[1], copy)
    await refused([paths[0], paths[1], paths[2], copy], "same member")


async def test_stale_member_refused(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    sb = read_superblock(paths[3])
    old = sb.replace(events=sb.events - 5)
    with open(paths[3], "r+b") as f:
        f.seek(SB_OFFSET)
        f.write(old.encode())
    msg = await refused(paths, "stale")
    assert str(paths[3]) in msg


async def test_too_many_missing_refused(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64")
    await refused(paths[:2], "too many members missing")
    _, r10 = md_fixture("r10-4-n2-c64")
    # n2 on 4 disks: roles 0 and 1 hold the same chunks
    await refused(r10[2:], "too many members missing")
    async with open_array(r10[1:3], readonly=True) as array:  # one copy of each left
        assert array.status()["state"] == "degraded"


async def test_raid0_missing_member_refused(md_fixture):
    _, paths = md_fixture("r0-3-c64")
    await refused(paths[:2], "raid0")


async def test_not_a_member_refused(tmp_path):
    blank = tmp_path / "blank.img"
    blank.write_bytes(b"\0" * (1 << 20))
    await refused([blank], "superblock")


async def test_dirty_degraded_refused_unless_forced(md_fixture):
    _, paths = md_fixture("r5-4-left-symmetric-c64-degraded")
    for p in paths:  # as if md had stopped while active
        sb = read_superblock(p)
        with open(p, "r+b") as f:
            f.seek(SB_OFFSET)
            f.write(sb.replace(resync_offset=0).encode())
    await refused(paths, "not stopped cleanly")
    array = await assemble([str(p) for p in paths], force=True, readonly=True)
    await array.close()


async def test_members_are_exclusive(md_fixture):
    _, paths = md_fixture("r1-2")
    async with open_array(paths, readonly=True):
        with pytest.raises(FuseraidError, match="busy"):
            await assemble([str(p) for p in paths])


def test_superblock_roundtrip_keeps_checksum(md_fixture):
    # the refusal tests rewrite superblocks with Superblock.encode(): make sure an
    # unchanged re-encode is byte-identical, so only the intended field differs
    _, paths = md_fixture("r1-2")
    raw = Path(paths[0]).read_bytes()[SB_OFFSET : SB_OFFSET + 4096]
    sb = Superblock.decode(raw, "d0")
    assert sb.encode() == raw
    assert struct.unpack_from("<I", raw, 0)[0] == 0xA92B4EFC


def test_sync_entry_point_not_used_from_trio_loop():
    # assemble is a coroutine: calling it outside trio must not open anything
    coro = assemble(["/nonexistent"])
    coro.close()
    with pytest.raises(FuseraidError):
        trio.run(assemble, ["/nonexistent"])


def test_fixture_list_is_complete():
    assert len(PLAIN) + len(RESHAPING) == len(fixture_names())
    assert all(load_meta(n)["array_sha256"] for n in PLAIN)


async def test_one_event_behind_is_fresh(md_fixture):
    """md's slack: a commit that reached only some members (crash mid-commit)."""
    meta, paths = md_fixture("r6-5-left-symmetric-c64")
    sb = read_superblock(paths[2])
    with open(paths[2], "r+b") as f:
        f.seek(SB_OFFSET)
        f.write(sb.replace(events=sb.events - 1).encode())
    async with open_array(paths, readonly=True) as array:
        assert array.status()["state"] == "clean"
        data = await array.read(0, meta["array_bytes"])
        assert hashlib.sha256(data).hexdigest() == meta["array_sha256"]
