"""Reshape speed, for raid5 4 -> 5 disks and raid5 4 disks -> raid6 5 disks on member
files in /dev/shm (page cache; fsync is nearly free there, so this measures the CPU and
memory path, not a disk):

- migration MiB/s (array content bytes / time of begin_reshape + run_offline, a
  superblock checkpoint per window) next to the physical limit measured in the same run
  on the same member files: `dd` reading every old member's old data area (what the old
  geometry holds) and `dd` writing every new member's new data area (what the new one
  holds, conv=fsync), bs=1M; ratio = migration MiB/s / dd MiB/s (same byte count);
- foreground 4 KiB random read IOPS on the live Array while the migrator runs flat out,
  vs idle just before (ratio = during / idle);
- the live pass's MiB/s (start_live_reshape on the assembled Array until it finished,
  one task doing those reads meanwhile) and its ratio to the same run's dd.

The migrations run in a fresh interpreter each (as a freshly started daemon would):
the allocator state left by building the array changes how fast multi-MiB allocations
are. Each case is repeated --repeat times; the medians of the per-run ratios are
printed last.

    .venv/bin/python benchmarks/bench_reshape.py [--member-mib 256] [--dir /dev/shm]
        [--seconds 2] [--repeat 3] [--data-offset-mib 2] [--case grow|raid6|all]
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from fuseraid.engine.assemble import open_array
from fuseraid.engine.levels import Slot, make_driver
from fuseraid.layout import Geometry
from fuseraid.member.device import Member
from fuseraid.migration.live import start_live_reshape
from fuseraid.migration.migrator import begin_reshape, run_offline
from fuseraid.migration.plan import Request
from fuseraid.migration.resume import open_members
from fuseraid.superblock.codec import Superblock, write_superblock

MIB = 1 << 20
CASES = {
    "grow": ("raid5 4->5 disks", Request(raid_disks=5)),
    "raid6": ("raid5 4 -> raid6 5", Request(level=6, raid_disks=5)),
}


def _array(folder: Path, member_mib: int, offset_mib: int) -> tuple[list[Path], list[Path], int]:
    """A clean raid5 (4 disks, left-symmetric, 512 KiB chunk) in member files, filled with
    random bytes through the real driver, plus one blank file to add."""
    chunk = 512 * 1024
    dev = (member_mib - offset_mib - 2) * MIB // chunk * chunk
    g = Geometry(5, 4, 2, chunk, dev)
    folder.mkdir(parents=True, exist_ok=True)
    uuid, ctime = secrets.token_bytes(16), int(time.time())
    paths = [folder / f"d{role}.img" for role in range(g.raid_disks)]
    extra = folder / "x0.img"
    for role, p in enumerate([*paths, extra]):
        with open(p, "wb") as f:
            f.truncate(member_mib * MIB)
            if p == extra:
                # the member to add has its pages, as a disk has its blocks: in this VM a
                # page the host took back (free page reporting) costs ~10 us at first
                # touch, which the dd reference (run later on the same files) never pays
                zeros = bytes(MIB)
                for _ in range(member_mib):
                    f.write(zeros)
        if role < g.raid_disks:
            write_superblock(p, Superblock.new(
                level=5, raid_disks=g.raid_disks, role=role, member_bytes=member_mib * MIB,
                dev_size=dev, chunk=chunk, layout=g.layout, data_offset=offset_mib * MIB,
                set_uuid=uuid, ctime=ctime, name="bench"))
    members = [Member(p) for p in paths]
    try:
        drv = make_driver(g, [Slot(m, offset_mib * MIB) for m in members])
        step = 12 * MIB  # whole rows
        block = random.Random(1).randbytes(step)
        for off in range(0, drv.size, step):
            drv.write(off, block[: min(step, drv.size - off)])
        drv.flush()
        size = drv.size
    finally:
        for m in members:
            m.close()
    return paths, [extra], size


def size_mib(member_mib: int, offset_mib: int) -> float:
    """The array's content in MiB (what _array builds)."""
    chunk = 512 * 1024
    dev = (member_mib - offset_mib - 2) * MIB // chunk * chunk
    return 3 * dev / MIB


def _dd(args: list[str]) -> None:
    subprocess.run(["dd", "bs=1M", "status=none", *args], check=True)


def _child(mode: str, folder: Path, case: str, seconds: float) -> Any:
    """Run one measurement in a fresh interpreter, like a freshly started daemon: the
    allocator state of this process (which built the array with big buffers) changes
    how fast multi-MiB allocations are, and with them the old code path's speed."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, str(folder), case,
                          "--seconds", str(seconds)], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def child_offline(folder: Path, request: Request) -> dict[str, Any]:
    """Seconds of begin_reshape + run_offline on the array in folder, windows, and
    where the old and new geometry's data areas are (for dd)."""
    paths = sorted(folder.glob("d*.img"))
    extras = sorted(folder.glob("x*.img"))
    with open_members(paths) as ms:
        added = [(str(extras[0]), Member(extras[0]))]
        try:
            t0 = time.perf_counter()
            plan, r = begin_reshape(ms.sbset, ms.by_role, request, add=added)
            assert r is not None
            run_offline(r)
            mig = time.perf_counter() - t0
        finally:
            added[0][1].close()
    return {"seconds": mig, "windows": r.windows, "old_disks": plan.old.raid_disks,
            "new_disks": plan.new.raid_disks, "old_bytes": plan.old.dev_size,
            "new_bytes": plan.new.dev_size, "old_offsets": list(plan.old_offsets),
            "new_offsets": list(plan.new_offsets)}


def bench_offline(folder: Path, member_mib: int, offset_mib: int,
                  case: str) -> tuple[float, float, int]:
    """(migration MiB/s, dd MiB/s, windows) over the array's content bytes."""
    paths, extras, size = _array(folder, member_mib, offset_mib)
    res = _child("offline", folder, case, 0)
    # the physical limit on the same (page-cached) files: read what the old geometry
    # holds, write what the new one holds
    members = [*paths, *extras]
    t0 = time.perf_counter()
    for role in range(res["old_disks"]):
        _dd([f"if={members[role]}", "of=/dev/null", "iflag=skip_bytes,count_bytes",
             f"skip={res['old_offsets'][role]}", f"count={res['old_bytes']}"])
    for role in range(res["new_disks"]):
        _dd(["if=/dev/zero", f"of={members[role]}", "iflag=count_bytes",
             "oflag=seek_bytes", "conv=notrunc,fsync", f"seek={res['new_offsets'][role]}",
             f"count={res['new_bytes']}"])
    dd = time.perf_counter() - t0
    for p in members:
        p.unlink()
    return size / MIB / res["seconds"], size / MIB / dd, res["windows"]


async def _iops(array, size: int, seconds: float, rng: random.Random,
                stop: trio.Event | None = None) -> float:
    """4 KiB random reads per second for `seconds` (or until `stop` is set)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds and not (stop is not None and stop.is_set()):
        await array.read(rng.randrange(0, size // 4096) * 4096, 4096)
        n += 1
    return n / (time.perf_counter() - t0)


async def child_live(folder: Path, seconds: float,
                     request: Request) -> tuple[float, float, float]:
    """(idle IOPS, IOPS during the migration, seconds the migration ran)."""
    paths = sorted(folder.glob("d*.img"))
    extras = sorted(folder.glob("x*.img"))
    rng = random.Random(1)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        size = array.size
        idle = await _iops(array, size, seconds, rng)
        t0 = time.perf_counter()
        r = await start_live_reshape(array, nursery, request, add=[str(extras[0])])
        assert r is not None
        during = await _iops(array, size, seconds, rng, array.reshape_control.finished)
        await array.reshape_control.finished.wait()
        took = time.perf_counter() - t0
        assert array.reshape_control.error is None, array.reshape_control.error
    return idle, during, took


def bench_live(folder: Path, member_mib: int, offset_mib: int, seconds: float,
               case: str) -> tuple[float, float, float]:
    paths, extras, _ = _array(folder, member_mib, offset_mib)
    idle, during, took = _child("live", folder, case, seconds)
    for p in [*paths, *extras]:
        p.unlink()
    return idle, during, took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member-mib", type=int, default=256)
    ap.add_argument("--data-offset-mib", type=int, default=2)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--child", nargs=3, metavar=("MODE", "FOLDER", "CASE"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        mode, folder, case = a.child
        req = CASES[case][1]
        if mode == "offline":
            print(json.dumps(child_offline(Path(folder), req)))
        else:
            print(json.dumps(trio.run(child_live, Path(folder), a.seconds, req)))
        return
    cases = list(CASES) if a.case == "all" else [a.case]
    ratios: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        for i in range(a.repeat):
            for c in cases:
                name, req = CASES[c]
                folder = Path(d) / f"{c}{i}"
                mig, dd, windows = bench_offline(folder / "off", a.member_mib,
                                                 a.data_offset_mib, c)
                ratios.setdefault(f"{c} copy", []).append(mig / dd)
                print(f"{name}: migration {mig:7.1f} MiB/s ({windows} windows)   dd "
                      f"{dd:7.1f} MiB/s   ratio {mig / dd:.2f}", flush=True)
                idle, during, took = bench_live(folder / "live", a.member_mib,
                                                a.data_offset_mib, a.seconds, c)
                live = size_mib(a.member_mib, a.data_offset_mib) / took
                ratios.setdefault(f"{c} iops", []).append(during / idle)
                ratios.setdefault(f"{c} live copy", []).append(live / dd)
                print(f"{name}: 4 KiB random read IOPS idle {idle:7.0f}   during "
                      f"migration {during:7.0f}   ratio {during / idle:.2f};   live pass "
                      f"{live:7.1f} MiB/s ({took:.2f} s, start included)   ratio to dd "
                      f"{live / dd:.2f}", flush=True)
    print("medians: " + "   ".join(f"{k} {statistics.median(v):.2f}"
                                   for k, v in ratios.items()))


if __name__ == "__main__":
    main()
