"""mdadm's backup file (fuseraid/migration/mdbackup.py) on a real capture: Linux md and
mdadm 4.2 reshaping a raid5 in place (chunk 64K -> 128K, --backup-file) were stopped
midway (tests/fixtures/md-backup-reshape, capture.json). Decoding, the one-line errors,
what a resume must replay, and the replay followed by fuseraid's own resume."""

from __future__ import annotations

import hashlib
import json
import lzma
import shutil
import struct
from pathlib import Path

import pytest
from mdfixtures import FIXTURES, unpack_fixture
from pattern import secpat, sha256_of

from fuseraid.engine.levels import Slot, make_driver
from fuseraid.errors import AssemblyError, FuseraidError
from fuseraid.migration import checkpoint
from fuseraid.migration.backup import BackupFile
from fuseraid.migration.mdbackup import (
    MAGIC2,
    Section,
    bsb_csum,
    encode_header,
    is_md_backup,
    read_md_backup,
    restore_md_backup,
    restore_needed,
)
from fuseraid.migration.migrator import run_offline
from fuseraid.migration.resume import open_members, resume_reshape

CAPTURE = FIXTURES / "md-backup-reshape"
META = json.loads((CAPTURE / "capture.json").read_text())
S = 512


def unpack_capture(dest: Path) -> tuple[list[Path], Path]:
    """The captured members (role order) and md's backup file, decompressed into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in [*META["members"], META["backup_file"]]:
        target = dest / name
        with lzma.open(CAPTURE / f"{name}.xz") as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
        paths.append(target)
    return paths[:-1], paths[-1]


@pytest.fixture
def capture(tmp_path: Path) -> tuple[list[Path], Path]:
    return unpack_capture(tmp_path / "cap")


def rewind_overrun(paths: list[Path]) -> None:
    """Write array bytes [end of the backup, md's progress) back in the old geometry:
    the state md would have left had it been held at the end of its backup."""
    lo = META["backup"]["restore_to_sectors"] * S
    hi = META["md_progress_sectors"] * S
    with open_members(paths) as ms:
        old, _ = checkpoint.geometries(ms.sb)
        drv = make_driver(old, [Slot(m, ms.sb.data_offset_bytes) for m in ms.by_role])
        drv.write(lo, secpat(1, hi - lo, lo))
        drv.flush()


def final_sha(paths: list[Path]) -> tuple[str, object]:
    with open_members(paths, readonly=True) as ms:
        assert not ms.sb.reshape_active
        g = checkpoint.geometry_of(ms.sb)
        drv = make_driver(g, [Slot(m, ms.sb.data_offset_bytes) for m in ms.by_role])
        return hashlib.sha256(drv.read(0, g.array_size)).hexdigest(), g


# ---------------------------------------------------------------------- decoding


def test_capture_header_decodes(capture) -> None:
    paths, bk = capture
    b = read_md_backup(bk)
    assert b.version == 2
    assert b.devstart == 8 * S
    want = [Section(a * S, n * S, off) for (a, n), off in
            zip(META["backup"]["sections_sectors"], META["backup"]["file_offsets"], strict=True)]
    assert list(b.sections) == want
    assert b.span == (want[0].array_start, want[-1].array_end)
    with open_members(paths, readonly=True) as ms:
        assert b.set_uuid == ms.sb.set_uuid
        assert abs((ms.sb.utime & ((1 << 40) - 1)) - b.mtime) < 600
    assert is_md_backup(bk)


def test_sections_hold_array_content_in_array_order(capture) -> None:
    b = read_md_backup(capture[1])
    for s in b.sections:
        assert b.read_section(s) == secpat(1, s.length, s.array_start)


def test_checksum_is_mdadms(capture) -> None:
    head = capture[1].read_bytes()[:512]
    csum, csum2 = struct.unpack_from("<I", head, 64)[0], struct.unpack_from("<I", head, 96)[0]
    assert csum == bsb_csum(head[:64]) == 0x24924915  # only ever sums byte 0 ('m')
    assert csum2 == bsb_csum(head[:96])
    assert bsb_csum(b"\x80" * 4) == (((-128 << 9) + (-128 << 6) + (-128 << 3) - 128)
                                     & 0xFFFFFFFF)  # signed char, as in C


def test_encode_header_reproduces_mdadms(capture) -> None:
    head = capture[1].read_bytes()[:512]
    b = read_md_backup(capture[1])
    sections = [(s.array_start // S, s.length // S) for s in b.sections]
    assert encode_header(b.set_uuid, b.mtime, sections) == head


def _variant(src: Path, tmp: Path, name: str, patch) -> Path:
    raw = bytearray(src.read_bytes())
    patch(raw)
    out = tmp / name
    out.write_bytes(bytes(raw))
    return out


@pytest.mark.parametrize(("what", "patch", "message"), [
    ("magic", lambda r: r.__setitem__(slice(0, 16), b"md_backup_data-9"), "bad magic"),
    ("csum", lambda r: struct.pack_into("<I", r, 64, 1), "checksum is wrong"),
    ("csum2", lambda r: struct.pack_into("<I", r, 96, 1), "checksum2 is wrong"),
    ("truncated", lambda r: r.__delitem__(slice(500_000, None)), "outside the file"),
    ("short", lambda r: r.__delitem__(slice(40, None)), "not an md backup file"),
])
def test_bad_headers_fail_in_one_line(capture, tmp_path, what, patch, message) -> None:
    bad = _variant(capture[1], tmp_path, what, patch)
    with pytest.raises(FuseraidError) as exc:
        read_md_backup(bad)
    text = str(exc.value)
    assert message in text and str(bad) in text and "\n" not in text


def test_is_md_backup_false_for_others(tmp_path) -> None:
    with BackupFile(tmp_path / "fr.bak", b"\1" * 16, b"\2" * 32) as f:
        f.write(0, b"x" * 4096)
    assert not is_md_backup(tmp_path / "fr.bak")
    assert not is_md_backup(tmp_path / "missing")


# ---------------------------------------------------------------------- what to replay


def test_restore_needed_for_the_capture(capture) -> None:
    paths, bk = capture
    b = read_md_backup(bk)
    with open_members(paths, readonly=True) as ms:
        sb = ms.sb
        assert sb.reshape_position == META["superblock"]["reshape_position_sectors"]
        sections, border = restore_needed(b, sb)
        assert sections == list(b.sections)
        assert border == META["backup"]["restore_to_sectors"] * S
        # md's reshape already past the whole backup: nothing to replay
        sb.reshape_position = META["backup"]["restore_to_sectors"]
        assert restore_needed(b, sb) is None
        # a position before the backed-up span: the backup is not this state's
        sb.reshape_position = 768
        with pytest.raises(AssemblyError, match="does not belong"):
            restore_needed(b, sb)
        sb.set_uuid = b"\0" * 16
        with pytest.raises(AssemblyError, match="another array"):
            restore_needed(b, sb)


def test_restore_refuses_a_stale_backup(capture, tmp_path, monkeypatch) -> None:
    paths, bk = capture
    b = read_md_backup(bk)
    sections = [(s.array_start // S, s.length // S) for s in b.sections]
    old = _variant(bk, tmp_path, "old.backup", lambda r: r.__setitem__(
        slice(0, 512), encode_header(b.set_uuid, b.mtime - 3 * 3600, sections)))
    monkeypatch.delenv("MDADM_GROW_ALLOW_OLD", raising=False)
    with open_members(paths) as ms:
        events = ms.sbset.events
        with pytest.raises(AssemblyError, match="MDADM_GROW_ALLOW_OLD"):
            restore_md_backup(old, ms.sbset, ms.by_role)
        assert ms.sbset.events == events  # nothing written
        assert restore_md_backup(old, ms.sbset, ms.by_role, allow_old=True) == 12288 * S


def test_restore_refuses_a_moved_data_offset_reshape(tmp_path) -> None:
    paths = unpack_fixture("r5-4to5-left-symmetric-c64-grow-parked50", tmp_path / "p")
    with open_members(paths) as ms:
        bk = tmp_path / "x.backup"
        bk.write_bytes(encode_header(ms.sb.set_uuid, 0, [(0, 8)]) + bytes(8192))
        with pytest.raises(AssemblyError, match="moves the data offset"):
            restore_md_backup(bk, ms.sbset, ms.by_role)


# ---------------------------------------------------------------------- replay + resume


def test_replay_then_fuseraid_finishes_like_mdadm(capture, tmp_path) -> None:
    """The capture as md left it: fuseraid's replay + resume gives byte for byte what
    mdadm's own Grow_restart + --grow --continue gave in the guest (capture.json), and
    like it cannot recover the array sectors md reshaped beyond its backup."""
    paths, bk = capture
    with open_members(paths) as ms:
        assert restore_md_backup(bk, ms.sbset, ms.by_role) == 12288 * S
        assert ms.sb.reshape_position == 12288
        assert restore_md_backup(bk, ms.sbset, ms.by_role) is None  # replayed once
        r = resume_reshape(ms.sbset, ms.by_role, backup_file=bk)  # md's file is reused
        try:
            run_offline(r)
        finally:
            r.backup.close()
    sha, g = final_sha(paths)
    assert sha == META["mdadm_restart_result"]["array_sha256"]
    assert g.chunk == 128 * 1024 and g.level == 5 and g.raid_disks == 4


def test_replay_then_fuseraid_finishes_the_rewound_capture(capture, tmp_path) -> None:
    paths, bk = capture
    rewind_overrun(paths)
    lo, hi = 10752 * S, 12288 * S
    with open_members(paths, readonly=True) as ms:  # without the replay: wrong
        r = resume_reshape(ms.sbset, ms.by_role, readonly=True,
                           backup_file=tmp_path / "fr.backup")
        assert r.volume.read(lo, hi - lo) != secpat(1, hi - lo, lo)
        r.backup.close()
    with open_members(paths) as ms:
        restore_md_backup(bk, ms.sbset, ms.by_role)
        r = resume_reshape(ms.sbset, ms.by_role, backup_file=tmp_path / "fr.backup")
        try:
            assert r.volume.read(0, META["array_bytes"]) == secpat(1, META["array_bytes"])
            run_offline(r)
        finally:
            r.backup.close()
    sha, _ = final_sha(paths)
    assert sha == sha256_of(1, META["array_bytes"]) == META["rewound"]["array_sha256_after"]


def test_magic_constant() -> None:
    assert MAGIC2 == b"md_backup_data-2" and len(MAGIC2) == 16


def test_grow_members_replays_mds_backup_by_itself(capture) -> None:
    """The user's path: `fuseraid grow --members ... --backup-file md0.backup` replays
    md's backup inside resume (no separate step) and finishes the rewound capture right;
    a read-only open refuses instead of serving the unreplayed rows."""
    from fuseraid.cli.main import main

    paths, bk = capture
    rewind_overrun(paths)
    with open_members(paths, readonly=True) as ms:
        with pytest.raises(AssemblyError, match="must be replayed"):
            resume_reshape(ms.sbset, ms.by_role, readonly=True, backup_file=bk)
    assert main(["grow", "--members", *map(str, paths), "--backup-file", str(bk)]) == 0
    sha, g = final_sha(paths)
    assert sha == sha256_of(1, META["array_bytes"])
    assert g.chunk == 128 * 1024
