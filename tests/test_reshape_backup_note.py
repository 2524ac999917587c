"""The reshape note (fuseraid/migration/note.py): where an in-place reshape's backup area
is, recorded on every member, so the next assembly after a crash resumes with no option;
and the backup area on an added member's free tail.

Covered: the note's codec (hypothesis: round trip, any corruption rejected), where it may
live (no_room), our superblock commits keep it, the durable order (note on every member
before the start checkpoint, erased after the finish), resume with no option after a
crash inside a window (file and member tail; in process with the crash hooks, and a
daemon killed with SIGKILL then a plain remount), a note naming a missing or foreign
file (one-line error, members unchanged), and Linux md (qemu, `interop`) reading
members that carry a note."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import sys
import time
from pathlib import Path

import pytest
from fsutil import daemon_pid, fuseraid, fuseraid_mount, kill_daemon, unmount
from hypothesis import given, settings
from hypothesis import strategies as st
from test_migration_kit import KIB, MIB, make_array, read_array

from fuseraid.engine.state import SuperblockSet
from fuseraid.errors import AssemblyError, FuseraidError, GeometryError
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration import note
from fuseraid.migration.backup import HEADER, BackupFile, reshape_id
from fuseraid.migration.migrator import begin_reshape, run_offline, tail_area
from fuseraid.migration.plan import Request, dev_extent
from fuseraid.migration.resume import open_members, resume_reshape
from fuseraid.superblock.codec import (
    MD_FEATURE_BITMAP_OFFSET,
    SB_OFFSET,
    read_superblock,
    write_superblock,
    written_size,
)

C = 16 * KIB
DEV = 256 * KIB
OFF = 16 * KIB  # the lowest data offset: no room to move it, so in place


@pytest.fixture(autouse=True)
def _no_env_backup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSERAID_BACKUP_FILE", raising=False)


# ---------------------------------------------------------------- the codec

_uuids = st.binary(min_size=16, max_size=16)
_rids = st.binary(min_size=32, max_size=32)
_paths = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"),
                 min_size=1, max_size=200).map(lambda s: "/" + s)
_notes = st.one_of(
    st.builds(note.ReshapeNote, _uuids, _rids, st.just(note.FILE), _paths),
    st.builds(note.ReshapeNote, _uuids, _rids, st.just(note.MEMBER), st.just(""), _uuids,
              st.integers(0, 2**63), st.integers(0, 2**63)),
)


@given(_notes)
def test_note_round_trips(n: note.ReshapeNote) -> None:
    raw = n.encode()
    assert len(raw) == note.NOTE_SIZE
    assert note.ReshapeNote.decode(raw) == n


@settings(max_examples=300)
@given(_notes, st.data())
def test_note_rejects_any_corruption(n: note.ReshapeNote, data: st.DataObject) -> None:
    raw = bytearray(n.encode())
    at = data.draw(st.integers(0, len(raw) - 1))
    raw[at] ^= data.draw(st.integers(1, 255))
    assert note.ReshapeNote.decode(bytes(raw)) is None
    cut = data.draw(st.integers(0, len(raw) - 1))
    assert note.ReshapeNote.decode(n.encode()[:cut]) is None


def test_note_rejects_blank_and_long_paths() -> None:
    assert note.ReshapeNote.decode(bytes(note.NOTE_SIZE)) is None
    long = note.ReshapeNote(bytes(16), bytes(32), note.FILE, "/" + "x" * note.MAX_PATH)
    with pytest.raises(FuseraidError, match="longer than"):
        long.encode()


def _sb(tmp: Path, **changes):
    paths, _, _ = make_array(tmp, Geometry(5, 3, 2, C, DEV), member_bytes=2 * OFF + DEV,
                             data_offset=2 * OFF)
    return read_superblock(paths[0]).replace(**changes)


def test_no_room_where_md_keeps_other_metadata(tmp_path: Path) -> None:
    sb = _sb(tmp_path)
    assert note.no_room(sb) is None
    # md's bitmap 1 KiB after the superblock (mdadm --grow --bitmap on 1.2 with no room)
    bm = sb.replace(feature_map=sb.feature_map | MD_FEATURE_BITMAP_OFFSET, bitmap_offset=2)
    assert "bitmap" in (note.no_room(bm) or "")
    assert note.no_room(bm.replace(bitmap_offset=8)) is None  # mdadm's usual 4 KiB
    assert "bad-block" in (note.no_room(sb.replace(bblog_offset=7, bblog_size=8)) or "")
    assert note.no_room(sb.replace(bblog_offset=16, bblog_size=8)) is None
    assert "max_dev" in (note.no_room(sb.replace(max_dev=1500, dev_roles=[0xFFFF] * 1500))
                         or "")
    assert note.no_room(sb.replace(max_dev=1408, dev_roles=[0xFFFF] * 1408)) is None
    assert "data" in (note.no_room(sb, lowest_data=4096) or "")


def test_superblock_commits_keep_the_note(tmp_path: Path) -> None:
    paths, _, _ = make_array(tmp_path, Geometry(5, 3, 2, C, DEV), member_bytes=OFF + DEV,
                             data_offset=OFF)
    rec = note.ReshapeNote(b"u" * 16, b"r" * 32, note.FILE, "/some/backup")
    with open_members(paths) as ms:
        members = [e.member for e in ms.sbset.entries]
        note.write(members, rec)
        sbset = SuperblockSet(ms.sbset.entries)
        for _ in range(3):
            sbset.commit()
        assert note.read(members, b"u" * 16, b"r" * 32) == rec
        assert note.read(members, b"u" * 16, b"x" * 32) is None  # another reshape's
    for p in paths:
        sb = read_superblock(p)  # still a valid superblock
        raw = p.read_bytes()
        assert sb.events >= 3
        assert note.ReshapeNote.decode(raw[note.NOTE_AT : note.NOTE_AT + note.NOTE_SIZE]) == rec
        # only header + dev_roles are written: the rest of the block is untouched
        assert not any(raw[SB_OFFSET + written_size(sb.max_dev) : note.NOTE_AT])


# ---------------------------------------------------------------- starting and finishing

# name: (old geometry, request, extra members, added member bytes, backup file?)
CASES = {
    # same size, every window in place, backed up in a file
    "file": (Geometry(5, 4, 1, C, DEV), Request(layout=4, chunk=8 * KIB), 0, 0, True),
    # raid5 on 3 -> raid6 on 4 (left-symmetric: data moves, 2 data disks both sides):
    # every window in place, backed up on the added member's free tail
    "tail": (Geometry(5, 3, 2, C, DEV), Request(level=6, raid_disks=4, layout=2), 1,
             OFF + DEV + 256 * KIB, False),
}


def _setup(tmp: Path, name: str):
    old, req, extra, xbytes, use_file = CASES[name]
    paths, extras, content = make_array(tmp, old, member_bytes=OFF + DEV, data_offset=OFF,
                                        extra=extra)
    for p in extras:
        os.truncate(p, xbytes)
    return paths, extras, content, req, (str(tmp / "backup") if use_file else None)


def _notes(paths: list[Path]) -> list[note.ReshapeNote | None]:
    out = []
    for p in paths:
        raw = p.read_bytes()[note.NOTE_AT : note.NOTE_AT + note.NOTE_SIZE]
        out.append(note.ReshapeNote.decode(raw))
    return out


@pytest.mark.parametrize("name", sorted(CASES))
def test_note_before_the_start_checkpoint_and_erased_after_the_finish(
        tmp_path: Path, name: str) -> None:
    paths, extras, content, req, bfile = _setup(tmp_path, name)
    everything = paths + extras
    seen: list[list[note.ReshapeNote | None]] = []
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        commit = ms.sbset.commit

        def spy(mutator=None, **kw):
            seen.append(_notes(everything))  # before any superblock says "reshaping"
            return commit(mutator, **kw)

        ms.sbset.commit = spy  # type: ignore[method-assign]
        try:
            plan, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, backup_file=bfile)
            assert r is not None and plan.backup_needed and r.noted
            where = r.backup_where
            assert where is not None and where["kind"] == ("file" if bfile else "member")
            if not bfile:
                assert where["path"] == str(extras[0])
                assert where["offset"] >= OFF + plan.new.dev_used
                assert where["offset"] + where["length"] <= extras[0].stat().st_size
            run_offline(r)
            if r.backup is not None:
                r.backup.close()
        finally:
            for _, m in added:
                m.close()
    rid = reshape_id(plan.ident)
    first = seen[0]  # the start checkpoint
    assert all(n is not None and n.reshape_id == rid for n in first), first
    assert all(n is None for n in _notes(everything))  # erased after the finish
    g, data, bad = read_array(everything)
    assert g == plan.new and data[: len(content)] == content and bad == 0


def test_no_backup_anywhere_names_both_ways(tmp_path: Path) -> None:
    old, req, *_ = CASES["tail"]
    paths, extras, _ = make_array(tmp_path, old, member_bytes=OFF + DEV, data_offset=OFF,
                                  extra=1)  # the added member has no free tail
    before = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths + extras]
    with open_members(paths) as ms, Member(extras[0]) as x:
        with pytest.raises(GeometryError) as e:
            begin_reshape(ms.sbset, ms.by_role, req, add=[(str(extras[0]), x)])
    msg = str(e.value)
    assert "--backup-file" in msg and "--add a member of at least" in msg and "\n" not in msg
    assert before == [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths + extras]


# ---------------------------------------------------------------- crash, resume with no option


class Crash(Exception):
    pass


def _crash_run(tmp: Path, name: str, windows: int, seed: int):
    """Start the reshape, copy `windows` windows with fsynced foreground writes between
    them, then crash inside the next window after its backup, with its new-layout
    footprint scribbled over (a torn in-place write). Returns (paths, extras, model)."""
    rng = random.Random(seed)
    paths, extras, content, req, bfile = _setup(tmp, name)
    model = bytearray(content)
    state = {"armed": False, "window": (0, 0)}

    def hook(step: str) -> None:
        if state["armed"] and step == "write":
            lo, hi = dev_extent(r.plan.new, *state["window"])
            for slot in r.new_slots:
                if slot is not None:
                    slot.member.pwrite(slot.data_offset + lo, rng.randbytes(hi - lo))
            raise Crash

    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            _, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, backup_file=bfile,
                                 hook=hook, max_window=64 * KIB)
            assert r is not None
            for i in range(windows + 1):
                s, e, b = r.next_window()
                assert b, "every window of these cases is in place"
                state["armed"] = i == windows
                state["window"] = (s, e)
                with pytest.raises(Crash) if i == windows else contextlib.nullcontext():
                    r.copy_window(s, e, b)
                if i < windows:
                    n = rng.randrange(1, 24 * KIB)
                    off = rng.randrange(0, len(model) - n)
                    data = rng.randbytes(n)
                    r.volume.write(off, data)
                    r.volume.flush()
                    model[off : off + n] = data
            if r.backup is not None:
                r.backup.close()
        finally:
            for _, m in added:
                m.close()
    return paths, extras, model


@pytest.mark.parametrize("name", sorted(CASES))
def test_crash_in_window_resumes_with_no_option(tmp_path: Path, name: str) -> None:
    paths, extras, model = _crash_run(tmp_path, name, windows=3, seed=5)
    everything = paths + extras
    with open_members(everything) as ms:
        assert ms.sb.reshape_active
        r = resume_reshape(ms.sbset, ms.by_role)  # no backup file, no environment
        assert r.windows == 1, "the torn window was replayed from the noted backup"
        assert r.volume.read(0, len(model)) == bytes(model)
        run_offline(r)
        if r.backup is not None:
            r.backup.close()
    g, data, bad = read_array(everything)
    assert data[: len(model)] == bytes(model) and bad == 0
    assert all(n is None for n in _notes(everything))


def test_without_the_note_the_torn_window_needs_the_file(tmp_path: Path) -> None:
    """The control: with the note erased, today's refusal (so the test above can fail)."""
    paths, _, _ = _crash_run(tmp_path, "file", windows=2, seed=9)
    with open_members(paths) as ms:
        note.erase(e.member for e in ms.sbset.entries)
        with pytest.raises(AssemblyError, match="backup file it was started with"):
            resume_reshape(ms.sbset, ms.by_role)


def _digests(paths: list[Path]) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]


def test_noted_file_missing_or_foreign_is_one_line_and_writes_nothing(
        tmp_path: Path) -> None:
    paths, _, _ = _crash_run(tmp_path, "file", windows=2, seed=3)
    bfile = tmp_path / "backup"
    saved = bfile.read_bytes()
    bfile.unlink()
    before = _digests(paths)
    with open_members(paths) as ms:
        with pytest.raises(AssemblyError) as e:
            resume_reshape(ms.sbset, ms.by_role)
    assert str(bfile) in str(e.value) and "missing" in str(e.value)
    r = fuseraid("grow", "--members", *paths, check=False)
    assert r.returncode == 1 and str(bfile) in r.stderr and "missing" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not bfile.exists() and _digests(paths) == before
    # the same path now holds another reshape's backup
    with BackupFile(bfile, b"o" * 16, b"t" * 32) as other:
        other.write(0, b"x" * 4096)
    foreign = bfile.read_bytes()
    with open_members(paths) as ms:
        with pytest.raises(AssemblyError, match="another reshape"):
            resume_reshape(ms.sbset, ms.by_role)
    assert _digests(paths) == before and bfile.read_bytes() == foreign
    # an explicit backup file still wins over the note: the right one finishes it
    bfile.write_bytes(saved)
    elsewhere = tmp_path / "moved.backup"
    os.replace(bfile, elsewhere)
    r = fuseraid("grow", "--members", *paths, "--backup-file", elsewhere)
    assert "reshaped to raid5" in r.stdout
    _, _, bad = read_array(paths)
    assert bad == 0


# ---------------------------------------------------------------- SIGKILL, plain remount

needs_fuse = pytest.mark.skipif(not Path("/dev/fuse").exists(), reason="needs /dev/fuse")

# name: (old geometry, grow arguments, added member bytes or 0)
LIVE = {
    "file": (Geometry(5, 4, 1, 64 * KIB, 4 * MIB), ["--layout", "parity-first"], 0),
    "tail": (Geometry(5, 3, 2, 64 * KIB, 4 * MIB),
             ["--level", "6", "--raid-devices", "4", "--layout", "left-symmetric"],
             OFF + 4 * MIB + MIB),
}


@needs_fuse
@pytest.mark.parametrize("name", sorted(LIVE))
def test_daemon_killed_mid_reshape_resumes_on_plain_remount(tmp_path: Path,
                                                            name: str) -> None:
    old, args, xbytes = LIVE[name]
    paths, extras, content = make_array(tmp_path, old, member_bytes=OFF + old.dev_size,
                                        data_offset=OFF, extra=1 if xbytes else 0)
    for p in extras:
        os.truncate(p, xbytes)
    extra_args = ["--add", str(extras[0])] if extras else \
        ["--backup-file", str(tmp_path / "bk")]
    model = bytearray(content)
    mp = tmp_path / "mp"
    mp.mkdir()
    fuseraid("mount", *paths, mp)
    pid = daemon_pid(mp)
    try:
        r = fuseraid("grow", mp, *args, *extra_args, "--speed-limit", "1M")
        assert "reshape started" in r.stdout
        kind = "backup file" if not extras else f"backup area on {extras[0]}"
        assert kind in r.stdout, r.stdout
        time.sleep(0.8)
        data = random.Random(2).randbytes(192 * KIB)
        with open(mp / "image", "r+b", buffering=0) as f:
            f.seek(MIB + 4096)
            f.write(data)
            os.fsync(f.fileno())
        model[MIB + 4096 : MIB + 4096 + len(data)] = data
        st = fuseraid("status", "--json", mp).stdout
        assert '"backup"' in st and ("member" if extras else "file") in st
    finally:
        kill_daemon(pid)
        unmount(mp)
    everything = paths + extras
    assert read_superblock(paths[0]).reshape_active, "the kill must land mid-reshape"
    assert all(n is not None for n in _notes(everything))
    with fuseraid_mount(everything, mp) as mp2:  # no option at all
        deadline = time.monotonic() + 120
        while "no reshape" not in fuseraid("grow", "--status", mp2).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert (mp2 / "image").read_bytes()[: len(model)] == bytes(model)
    g, got, bad = read_array(everything)
    assert not read_superblock(paths[0]).reshape_active
    assert got[: len(model)] == bytes(model) and bad == 0
    assert all(n is None for n in _notes(everything))


@needs_fuse
def test_mount_with_noted_file_missing_is_refused(tmp_path: Path) -> None:
    paths, _, _ = _crash_run(tmp_path, "file", windows=1, seed=4)
    (tmp_path / "backup").unlink()
    before = _digests(paths)
    mp = tmp_path / "mp"
    mp.mkdir()
    try:
        r = fuseraid("mount", *paths, mp, check=False)
    finally:
        unmount(mp)
    assert r.returncode == 1 and str(tmp_path / "backup") in r.stderr, r.stderr
    assert _digests(paths) == before


def _crowd_superblocks(paths: list[Path]) -> None:
    """max_dev 1500 (md's limit is 1920): dev_roles reach into the note's KiB."""
    for p in paths:
        sb = read_superblock(p)
        write_superblock(p, sb.replace(max_dev=1500, dev_roles=sb.dev_roles + [0xFFFF] * (
            1500 - sb.max_dev)))


def test_no_room_for_the_note_falls_back_to_the_file(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    paths, _, content, req, bfile = _setup(tmp_path, "file")
    _crowd_superblocks(paths)
    with open_members(paths) as ms:
        _, r = begin_reshape(ms.sbset, ms.by_role, req, backup_file=bfile)
        assert r is not None and not r.noted
        assert r.backup_where == {"kind": "file", "path": bfile, "recorded": False}
        r.copy_window(*r.next_window())
        r.backup.close()
    assert "cannot be recorded" in caplog.text and "max_dev 1500" in caplog.text
    assert all(n is None for n in _notes(paths))
    with open_members(paths) as ms:
        with pytest.raises(AssemblyError, match="backup file it was started with"):
            resume_reshape(ms.sbset, ms.by_role)
        r = resume_reshape(ms.sbset, ms.by_role, backup_file=bfile)
        run_offline(r)
        r.backup.close()
    _, data, bad = read_array(paths)
    assert data == content and bad == 0
    # a backup on a member tail nobody could find again is refused instead
    paths, extras, _, req, _ = _setup(tmp_path / "tail", "tail")
    _crowd_superblocks(paths)
    with open_members(paths) as ms, Member(extras[0]) as x:
        with pytest.raises(GeometryError, match="cannot record it: .*max_dev 1500"):
            begin_reshape(ms.sbset, ms.by_role, req, add=[(str(extras[0]), x)])


def test_tail_area_is_beyond_both_geometries() -> None:
    from fuseraid.migration.plan import plan_reshape

    old, req, *_ = CASES["tail"]
    sizes = [OFF + DEV] * 3 + [OFF + DEV + 256 * KIB]
    plan = plan_reshape(old, [OFF] * 3, sizes, req, backup=True)
    base, cap = tail_area(plan, sizes[-1])
    assert base % 4096 == 0 and base >= OFF + max(old.dev_used, plan.new.dev_used)
    assert base + cap <= sizes[-1] and cap >= HEADER + plan.unit


# ---------------------------------------------------------------- Linux md and the note


@pytest.mark.interop
def test_md_examines_and_assembles_members_carrying_a_note(tmp_path: Path) -> None:
    """A note on every member of an array fuseraid finished, and of one it left half
    done with a moved data offset (md resumes that one): mdadm --examine works, md
    assembles, content and mismatch_cnt as expected; md's superblock writes (events move
    on) leave the note in place."""
    sys.path.insert(0, str(Path(__file__).parent / "interop"))
    import mdcases as mc
    import mdvm
    from test_reshape_interop import WAIT_RESHAPE

    if mdvm.qemu_binary() is None or mdvm.load_image() is None:
        pytest.skip("qemu or the md guest image is missing (scripts/interop-setup.sh)")
    old = Geometry(5, 3, 2, 64 * KIB, 2 * MIB)
    rec = note.ReshapeNote(b"u" * 16, b"r" * 32, note.FILE, "/x/backup")
    disks: list[Path] = []
    per_case = []
    models = {}
    for i, (name, windows) in enumerate((("done", None), ("half", 3))):
        paths, extras, content = make_array(tmp_path / name, old, member_bytes=4 * MIB,
                                            data_offset=MIB, extra=1)
        with open_members(paths) as ms, Member(extras[0]) as x:
            _, r = begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=4),
                                 add=[(str(extras[0]), x)], max_window=256 * KIB)
            assert r is not None
            if windows is None:
                run_offline(r)
            else:
                for _ in range(windows):
                    r.copy_window(*r.next_window())
        members = paths + extras
        for p in members:  # a note md has never seen, on every member
            with open(p, "r+b") as f:
                f.seek(note.NOTE_AT)
                f.write(rec.encode())
        models[name] = content + bytes(3 * 2 * MIB - len(content))
        first = len(disks)
        disks += members
        devs = " ".join(f"/dev/vd{chr(ord('a') + k)}" for k in range(first, len(disks)))
        per_case.append((name, [
            f"mdadm --examine {devs} | sed 's/^/@@EXAMINE {name} /'",
            f"mdadm --assemble /dev/md{i} --run {devs}",
            f"md_reshaped md{i}",
            f"md_report {name} md{i} check",
        ]))
    events = [read_superblock(p).events for p in disks]
    out = mdvm.run_md_job(disks, mc.job(per_case, extra_lib=WAIT_RESHAPE),
                          timeout=900).output
    reports = mc.parse_reports(out)
    for name, model in models.items():
        rep = reports[name]
        assert rep.values.get("rc") == "0", out[-3000:]
        assert sum("Magic : a92b4efc" in line for line in rep.examine) == 4, rep.examine
        assert rep.values["sha256"] == hashlib.sha256(model).hexdigest()
        assert rep.values["mismatch_cnt"] == "0"
    assert all(read_superblock(p).events > e for p, e in zip(disks, events, strict=True))
    assert all(n == rec for n in _notes(disks))
