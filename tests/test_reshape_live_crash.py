"""Crash safety of the live migrator's batches (runner.run_live: several windows per
worker hop, a commit only where the safety rule measured from the durable border needs
one and at the end of each batch; writes to the batch wait until it is committed):

- a crash at sampled steps of a live pass: the member files as a SIGKILL would leave
  them at that instant (copied at the hook), resumed offline, give the content back;
- a live pass with a foreground writer (write + flush, logged once acknowledged) in a
  child process, SIGKILLed at random instants and resumed by the assembler (the mount
  path), never loses an acknowledged write; the write cut by the kill is old-or-new
  per byte.

Scenarios from test_reshape_crash: forward grow (one commit per batch), same size with
headroom (every window needs the one before it committed), in place through the backup
file (one window per batch). Batches of several windows hold their span exclusively."""

from __future__ import annotations

import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from test_migration_kit import KIB, make_array, read_array
from test_reshape_crash import SCENARIOS as CRASH_SCENARIOS
from test_reshape_crash import (
    SMALL_WINDOW,
    _with_sb,
    check_after_kill,
    check_finished,
)

from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration import open_array
from fuseraid.migration.live import start_live_reshape
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import MAX_WINDOW, Request
from fuseraid.migration.resume import open_members, resume_reshape
from fuseraid.migration.runner import Batch, copy_batch, plan_batch

# name: test_reshape_crash's scenario tuple, and the max window
SCENARIOS = {name: (sc, SMALL_WINDOW) for name, sc in CRASH_SCENARIOS.items()}
# little headroom, full-size windows: the rule allows one window per commit (as for
# raid5 4 -> raid6 5 disks), so batches commit before each window
SCENARIOS["same-size-tight"] = ((Geometry(6, 4, 2, 16 * KIB, 1024 * KIB), Request(layout=9),
                                 1024 * KIB + 64 * KIB, 64 * KIB, 0, None, False), MAX_WINDOW)
FAST = ("forward-grow", "same-size-tight", "in-place-backup")


def _setup(tmp: Path, name: str):
    (old, req, member, offset, extra, exposed, backup), _ = SCENARIOS[name]
    paths, extras, content = make_array(tmp, old, member_bytes=member, data_offset=offset,
                                        extra=extra)
    return paths, extras, content, req, exposed, str(tmp / "backup") if backup else None


class Crash(Exception):
    pass


# ---------------------------------------------------------------- the batches planned


def _batches(name: str, tmp: Path, room: int) -> list[Batch]:
    """Every batch of a whole pass with `room` windows each, copied as run_live would
    (offline, same code): checks the lock mode each batch gets."""
    paths, extras, _, req, exposed, bfile = _setup(tmp, name)
    out = []
    with open_members(paths) as ms:
        added = [(str(p), Member(p)) for p in extras]
        try:
            _, r = begin_reshape(ms.sbset, ms.by_role, req, add=added, exposed=exposed,
                                 backup_file=bfile, max_window=SCENARIOS[name][1])
            assert r is not None

            while not r.done:
                b = plan_batch(r, room)
                out.append(b)
                copy_batch(r, b)
                assert r.durable == r.border  # every batch ends committed
            r.finish()
            if r.backup is not None:
                r.backup.close()
        finally:
            for _, m in added:
                m.close()
    return out


def test_batch_lock_modes(tmp_path: Path) -> None:
    grow = _batches("forward-grow", tmp_path / "g", 8)
    # batches take several windows (exclusively: a shared multi-window batch let a
    # reader of the old layout race the batch's writes)
    assert any(len(b.windows) > 1 for b in grow)
    tight = _batches("same-size-tight", tmp_path / "s", 8)
    assert any(len(b.windows) > 1 for b in tight)
    inplace = _batches("in-place-backup", tmp_path / "i", 8)
    assert all(len(b.windows) == 1 for b in inplace if b.windows[0][2])
    # one plain window: shared (the per-window protocol); several, or backed up: exclusive
    assert all(b.exclusive == (len(b.windows) > 1 or b.windows[0][2])
               for b in grow + tight + inplace)


@pytest.mark.parametrize("name", ["forward-grow", "same-size-tight"])
async def test_live_batches_under_load(tmp_path: Path, name: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No speed limit (so batches of several windows): readers and writers compare with
    the model all along; a batch's lock keeps them right."""
    from test_reshape_live import _hammer

    import fuseraid.migration.runner as runner

    sizes: list[int] = []

    def spy(reshape: Any, room: int) -> Batch:
        b = plan_batch(reshape, room)
        sizes.append(len(b.windows))
        return b

    monkeypatch.setattr(runner, "plan_batch", spy)
    paths, extras, content, req, exposed, _ = _setup(tmp_path, name)
    model = bytearray(content[: exposed or len(content)])
    done = {"n": 0}
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        r = await start_live_reshape(array, nursery, req, add=[str(p) for p in extras],
                                     max_window=SCENARIOS[name][1])
        assert r is not None
        stop = trio.Event()

        async def load() -> None:
            done["n"] = await _hammer(array, model, random.Random(9), stop)

        nursery.start_soon(load)
        with trio.fail_after(120):
            await array.reshape_control.finished.wait()
        stop.set()
        assert array.reshape_control.error is None
    assert done["n"] > 10 and max(sizes) > 1
    _, data, bad = read_array(paths + extras)
    assert data[: len(model)] == bytes(model) and bad == 0


# ---------------------------------------------------------------- crash at a step


def _snapshot(files: list[Path], dest: Path) -> None:
    dest.mkdir()
    for p in files:
        if p.exists():
            shutil.copyfile(p, dest / p.name)


async def _live_pass(tmp: Path, name: str, crash_at: int, snap: Path) -> bool:
    """Run the scenario live; at hook call `crash_at` copy every file (what a SIGKILL
    leaves: the page cache) to `snap` and stop. Returns whether it crashed."""
    (_, req, _, _, _, exposed, backup), window = SCENARIOS[name]
    paths = sorted(tmp.glob("d*.img"))
    extras = sorted(tmp.glob("x*.img"))
    bfile = str(tmp / "backup") if backup else None
    calls = {"n": 0}

    def hook(step: str) -> None:
        calls["n"] += 1
        if calls["n"] == crash_at:
            _snapshot(sorted(tmp.glob("*.img")) + sorted(tmp.glob("backup")), snap)
            raise Crash(step)

    try:
        async with open_array([str(p) for p in paths]) as array, \
                trio.open_nursery() as nursery:
            r = await start_live_reshape(array, nursery, req, add=[str(p) for p in extras],
                                         backup_file=bfile, max_window=window,
                                         array_size=exposed)
            assert r is not None
            r.hook = hook
            with trio.fail_after(60):
                await array.reshape_control.finished.wait()
    except BaseException as exc:  # the Crash, out of the migrator's task
        if not isinstance(exc, Crash | BaseExceptionGroup):
            raise
        return True
    return False


@pytest.mark.parametrize("name", FAST)
def test_live_crash_at_sampled_steps(tmp_path: Path, name: str) -> None:
    rng = random.Random(name)
    for k in sorted({1, 2, 3, 4, *rng.sample(range(5, 60), 6)}):
        t = tmp_path / f"k{k}"
        paths, extras, content, _, exposed, bfile = _setup(t, name)
        model = content[: exposed or len(content)]
        snap = t / "snap"
        if not trio.run(_live_pass, t, name, k, snap):
            continue  # finished before the k-th step
        files = _with_sb([snap / p.name for p in paths + extras])
        with open_members(files) as ms:
            r = resume_reshape(ms.sbset, ms.by_role,
                               backup_file=str(snap / "backup") if bfile else None)
            assert r.volume.read(0, len(model)) == model, f"step {k}"
            run_offline(r)
            if r.backup is not None:
                r.backup.close()
        _, data, bad = read_array(files)
        assert data[: len(model)] == model and bad == 0, f"step {k}"


# ---------------------------------------------------------------- SIGKILL with a writer

CHILD = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from test_reshape_live_crash import child_main
child_main(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "start")
"""


def child_main(tmp: Path, name: str, seed: int, start: bool) -> None:
    trio.run(_child, tmp, name, seed, start)


async def _child(tmp: Path, name: str, seed: int, start: bool) -> None:
    """Start (or, through the assembler, resume) the scenario's reshape live, with one
    foreground writer: 'P off n seed' before each write, 'A' once write + flush
    returned; every step of the pass sleeps a little so the kills land inside it."""
    (_, req, _, _, _, exposed, backup), window = SCENARIOS[name]
    paths = sorted(tmp.glob("d*.img"))
    extras = sorted(tmp.glob("x*.img"))
    bfile = str(tmp / "backup") if backup else None
    rng = random.Random(seed)
    out = sys.stdout

    def slow(step: str) -> None:
        time.sleep(0.004)

    members = paths if start else _with_sb(paths + extras)
    async with open_array([str(p) for p in members], backup_file=bfile) as array, \
            trio.open_nursery() as nursery:
        if start:
            r = await start_live_reshape(array, nursery, req, add=[str(p) for p in extras],
                                         backup_file=bfile, max_window=window,
                                         array_size=exposed)
        else:
            r = array.reshape
        assert r is not None
        r.hook = slow
        out.write("S\n" if start else "R\n")
        out.flush()
        size = array.size
        while array.reshape is not None:
            n = rng.randrange(1, 40 * KIB)
            off = rng.randrange(0, size - n)
            wseed = rng.randrange(1 << 30)
            out.write(f"P {off} {n} {wseed}\n")
            out.flush()
            await array.write(off, random.Random(wseed).randbytes(n))
            await array.flush()
            out.write("A\n")
            out.flush()
            await trio.sleep(rng.uniform(0, 0.004))
        control = array.reshape_control
        await control.finished.wait()
        assert control.error is None, control.error
    out.write("F\n")
    out.flush()


def _kill_live(tmp: Path, name: str, seed: int, kills: int) -> int:
    """As test_reshape_crash._kill_run, with the live child: returns the kills that
    landed mid-reshape."""
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
            break
        mode = "resume" if active else "start"
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, tests_dir, str(tmp), name, str(seed + round_), mode],
            stdout=subprocess.PIPE, bufsize=0)
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if round_ < kills:
                # after its first line the child's pass is running; an idle machine
                # finishes these small passes in well under 0.25 s, so most kills
                # come early (some later, to land after a finish too)
                time.sleep(rng.uniform(0.0, 0.05 if rng.random() < 0.8 else 0.25))
                proc.send_signal(signal.SIGKILL)
            out, _ = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if round_ == kills:
            assert proc.returncode == 0, "the last child failed"
        lines = (first + out).decode().splitlines()
        started = started or "S" in lines or active
        mid += check_after_kill(tmp, everything, model, lines, round_)
    check_finished(paths, everything, model)
    return mid


@pytest.mark.parametrize("name", FAST)
def test_live_sigkill_with_writer(tmp_path: Path, name: str) -> None:
    assert _kill_live(tmp_path, name, seed=3, kills=3) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_live_sigkill_many(tmp_path: Path, name: str) -> None:
    mid = 0
    for i in range(3):
        mid += _kill_live(tmp_path / f"k{i}", name, seed=100 * i + 5, kills=12)
    assert mid > 0
