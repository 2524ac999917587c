"""Crash safety: a reshape interrupted at every step of the durable order (and with the
window's new-layout area scribbled over, worse than any torn write) resumes from the
superblocks (+ backup file), finishes, and every acknowledged foreground write is intact.
Scenarios: forward (offset down), backward (offset up, fewer data disks), same size with
headroom, and in place without headroom through the backup file."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_migration_kit import KIB, make_array, read_array

from fuseraid.errors import FuseraidError
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import Request, dev_extent
from fuseraid.migration.resume import open_members, resume_reshape
from fuseraid.superblock.codec import read_superblock

C = 16 * KIB
DEV = 256 * KIB


SMALL_WINDOW = 32 * KIB  # many windows, so kills land between and inside them


class Crash(Exception):
    pass


# name: (old geometry, request, member bytes, data offset, extra members, exposed, backup)
SCENARIOS = {
    "forward-grow": (Geometry(5, 3, 2, C, DEV), Request(raid_disks=4), 768 * KIB, 256 * KIB,
                     1, None, False),
    "backward-fewer": (Geometry(5, 4, 2, C, DEV), Request(raid_disks=3), 768 * KIB,
                       256 * KIB, 0, 2 * DEV, False),
    "same-size-headroom": (Geometry(6, 4, 2, C, DEV), Request(layout=9), 768 * KIB,
                           256 * KIB, 0, None, False),
    "in-place-backup": (Geometry(5, 4, 1, C, DEV), Request(layout=4, chunk=8 * KIB),
                        16 * KIB + DEV, 16 * KIB, 0, None, True),
    "grow-in-place-backup": (Geometry(5, 3, 2, C, DEV), Request(raid_disks=4),
                             16 * KIB + DEV, 16 * KIB, 1, None, True),
    "shrink-in-place-backup": (Geometry(5, 4, 2, C, DEV), Request(raid_disks=3),
                               16 * KIB + DEV, 16 * KIB, 0, 2 * DEV, True),
}
STEPS = ("read", "backup", "write", "torn", "commit", "moved", "finish")


def _setup(tmp: Path, name: str):
    old, req, member, offset, extra, exposed, backup = SCENARIOS[name]
    paths, extras, content = make_array(tmp, old, member_bytes=member, data_offset=offset,
                                        extra=extra)
    bfile = str(tmp / "backup") if backup else None
    return paths, extras, content, req, exposed, bfile


def _scribble(reshape, start: int, end: int, rng: random.Random) -> None:
    """Overwrite the window's whole new-layout footprint on every member with noise."""
    lo, hi = dev_extent(reshape.plan.new, start, end)
    for slot in reshape.new_slots:
        if slot is not None:
            slot.member.pwrite(slot.data_offset + lo, rng.randbytes(hi - lo))


def run_with_crash(tmp: Path, name: str, crash_at: int, torn: bool, seed: int) -> None:
    rng = random.Random(seed)
    paths, extras, content, req, exposed, bfile = _setup(tmp, name)
    model = bytearray(content[: exposed or len(content)])
    all_paths = paths + extras
    calls = {"n": 0}
    window: list[int] = [0, 0]

    def hook(step: str) -> None:
        calls["n"] += 1
        if calls["n"] >= crash_at:
            if torn and step == "write":
                _scribble(reshape, *window, rng)
            raise Crash(step)

    crashed = False
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            plan, reshape = begin_reshape(ms.sbset, ms.by_role, req, add=added,
                                          exposed=exposed, backup_file=bfile, hook=hook)
            assert reshape is not None
            try:
                reshape.replay_backup()
                while not reshape.done:
                    s, e, b = reshape.next_window()
                    window[:] = [s, e]
                    reshape.copy_window(s, e, b)
                    # acknowledged foreground writes between windows, both sides of the border
                    for _ in range(2):
                        n = rng.randrange(1, 40 * KIB)
                        off = rng.randrange(0, len(model) - n)
                        data = rng.randbytes(n)
                        reshape.volume.write(off, data)
                        reshape.volume.flush()
                        model[off : off + n] = data
                reshape.finish()
            except Crash:
                crashed = True
            if reshape.backup is not None:
                reshape.backup.close()
        finally:
            for _, m in added:
                m.close()
    if crashed:
        with open_members(all_paths) as ms:
            r = resume_reshape(ms.sbset, ms.by_role, backup_file=bfile)
            # the interrupted array already serves the model's content
            assert r.volume.read(0, len(model)) == bytes(model)
            run_offline(r)
            if r.backup is not None:
                r.backup.close()
    _, data, bad = read_array(all_paths)
    assert data[: len(model)] == bytes(model)
    assert data[len(model) :] == bytes(len(data) - len(model))
    assert bad == 0


def _hook_calls(tmp: Path, name: str) -> int:
    """How many hook calls a whole uninterrupted run of the scenario makes."""
    paths, extras, _, req, exposed, bfile = _setup(tmp, name)
    n = {"n": 0}

    def count(step: str) -> None:
        n["n"] += 1

    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            _, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                                 backup_file=bfile, hook=count)
            assert r is not None
            run_offline(r)
        finally:
            for _, m in added:
                m.close()
    return n["n"]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_crash_at_sampled_steps(tmp_path: Path, name: str) -> None:
    total = _hook_calls(tmp_path / "count", name)
    rng = random.Random(name)
    points = sorted(set([1, 2, 3, 4, 5, total] + rng.sample(range(1, total + 1),
                                                         min(total, 8))))
    for i, k in enumerate(points):
        for torn in (False, True):
            run_with_crash(tmp_path / f"c{i}{torn:d}", name, k, torn, seed=k)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_crash_at_every_step(tmp_path: Path, name: str) -> None:
    total = _hook_calls(tmp_path / "count", name)
    for k in range(1, total + 1):
        for torn in (False, True):
            run_with_crash(tmp_path / f"c{k}{torn:d}", name, k, torn, seed=k)


# ---------------------------------------------------------------- SIGKILL at random instants

CHILD = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_reshape_crash import child_main
child_main(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "start")
"""


def child_main(tmp: Path, name: str, seed: int, start: bool) -> None:
    """Run (or resume) the scenario's reshape with foreground writes; log each write as
    'P off n seed' before and 'A' once it is durable, flushing stdout each time."""
    _, req, _, _, extra, exposed, backup = SCENARIOS[name]
    paths = sorted(tmp.glob("d*.img"))
    extras = sorted(tmp.glob("x*.img"))
    bfile = str(tmp / "backup") if backup else None
    rng = random.Random(seed)
    out = sys.stdout
    if start:
        with open_members(paths) as ms:
            added = [(str(p), Member(p)) for p in extras]
            _, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                                 backup_file=bfile, max_window=SMALL_WINDOW)
            out.write("S\n")
            out.flush()
            _drive(r, rng, out)
        return
    # an added member the interrupted start commit never reached has no superblock: the
    # new geometry resumes without it (degraded), as the assembler would
    with open_members(_with_sb(paths + extras)) as ms:
        r = resume_reshape(ms.sbset, ms.by_role, backup_file=bfile, max_window=SMALL_WINDOW)
        out.write("R\n")
        out.flush()
        _drive(r, rng, out)


def _drive(r, rng: random.Random, out) -> None:
    r.replay_backup()
    size = r.volume.size
    while not r.done:
        s, e, b = r.next_window()
        r.copy_window(s, e, b)
        time.sleep(rng.uniform(0.01, 0.06))  # spread the run so kills land mid-migration
        n = rng.randrange(1, 40 * KIB)
        off = rng.randrange(0, size - n)
        wseed = rng.randrange(1 << 30)
        out.write(f"P {off} {n} {wseed}\n")
        out.flush()
        r.volume.write(off, random.Random(wseed).randbytes(n))
        r.volume.flush()
        out.write("A\n")
        out.flush()
    r.finish()
    out.write("F\n")
    out.flush()


def _apply_log(model: bytearray, lines: list[str]) -> tuple[int, int, bytes] | None:
    """Apply acknowledged writes; return the last unacknowledged one (may be partial)."""
    pending = None
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "P":
            off, n, wseed = map(int, parts[1:])
            pending = (off, n, random.Random(wseed).randbytes(n))
        elif parts and parts[0] == "A" and pending is not None:
            off, n, data = pending
            model[off : off + n] = data
            pending = None
    return pending


def _with_sb(paths: list[Path]) -> list[Path]:
    out = []
    for p in paths:
        try:
            read_superblock(p)
        except FuseraidError:
            continue  # an added member the interrupted start never reached
        out.append(p)
    return out


def _current(tmp: Path, paths: list[Path], n: int) -> tuple[bool, bytes]:
    """(reshape still active, first n array bytes) as a resume would serve them."""
    bfile = tmp / "backup"
    with open_members(_with_sb(paths)) as ms:
        if not ms.sb.reshape_active:
            active = False
        else:
            r = resume_reshape(ms.sbset, ms.by_role,
                               backup_file=str(bfile) if bfile.exists() else None)
            try:
                return True, r.volume.read(0, n)
            finally:
                if r.backup is not None:
                    r.backup.close()
    _, data, _ = read_array(_with_sb(paths))
    return active, data[:n]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sigkill_at_random_instants(tmp_path: Path, name: str) -> None:
    _kill_run(tmp_path, name, seed=7, kills=4)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_sigkill_many(tmp_path: Path, name: str) -> None:
    mid = 0
    for i in range(3):
        mid += _kill_run(tmp_path / f"k{i}", name, seed=1000 * i + 11, kills=20,
                         delay=(0.0, 0.15))
    print(f"{name}: {mid} kills landed mid-reshape")


def _kill_run(tmp: Path, name: str, seed: int, kills: int,
              delay: tuple[float, float] = (0.0, 0.4)) -> int:
    """Start the reshape in a child, SIGKILL it at random instants, check the array after
    every kill (acknowledged writes intact, the cut write old-or-new per byte), resume in
    a new child; the last child runs to the end. Returns how many kills hit a reshape in
    progress."""
    paths, extras, content, _, exposed, _ = _setup(tmp, name)
    everything = paths + extras
    model = bytearray(content[: exposed or len(content)])
    rng = random.Random(seed)
    tests_dir = str(Path(__file__).parent)
    started = False
    mid = 0
    for round_ in range(kills + 1):
        with open_members(_with_sb(paths)) as ms:
            active = ms.sb.reshape_active
        if started and not active:
            break  # finished
        mode = "resume" if active else "start"
        # unbuffered bytes: readline() below must not read ahead of what communicate()
        # collects afterwards (with a timeout it reads the raw pipe, skipping any buffer)
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, tests_dir, str(tmp), name, str(seed + round_), mode],
            stdout=subprocess.PIPE, bufsize=0)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # "S"/"R": the reshape is recorded and running
            if round_ < kills:
                time.sleep(rng.uniform(*delay))  # from when it runs
                proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        lines = (first + out).decode().splitlines()
        started = started or "S" in lines or active
        mid += check_after_kill(tmp, everything, model, lines, round_)
    check_finished(paths, everything, model)
    return mid


def check_after_kill(tmp: Path, everything: list[Path], model: bytearray,
                     lines: list[str], round_: int) -> bool:
    """After a kill: every acknowledged write in the log is intact and the write the kill
    cut is old-or-new per byte (then the model takes what is there). Returns whether the
    reshape is still in progress."""
    pending = _apply_log(model, lines)
    before = bytes(model)  # "old" for the cut write: after this round's acknowledged ones
    still, now = _current(tmp, everything, len(model))
    if pending is not None:
        off, n, data = pending
        for j in range(n):
            assert now[off + j] in (before[off + j], data[j]), f"byte {off + j}"
        model[off : off + n] = now[off : off + n]
    assert now == bytes(model), f"round {round_}: acknowledged data lost"
    return still


def check_finished(paths: list[Path], everything: list[Path], model: bytearray) -> None:
    """The last run finished the reshape; the array is the model and scrubs 0."""
    with open_members(_with_sb(paths)) as ms:
        assert not ms.sb.reshape_active, "the reshape never finished"
    _, data, bad = read_array(_with_sb(everything))
    assert data[: len(model)] == bytes(model)
    assert bad == 0
