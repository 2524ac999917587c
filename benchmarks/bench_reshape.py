"""Reshape speed: migration MiB/s of a raid5 3 -> 4 disk grow (offline, to the end,
checkpointing every window) next to a plain `dd` copy of the same bytes; and foreground
4 KiB random read IOPS on the live Array while the migrator runs vs idle.

    .venv/bin/python benchmarks/bench_reshape.py [--member-mib 64] [--dir /dev/shm]
        [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_migration_kit import make_array  # noqa: E402

from fuseraid.engine.assemble import open_array  # noqa: E402
from fuseraid.layout import Geometry  # noqa: E402
from fuseraid.member.device import Member  # noqa: E402
from fuseraid.migration.live import start_live_reshape  # noqa: E402
from fuseraid.migration.migrator import begin_reshape, run_offline  # noqa: E402
from fuseraid.migration.plan import Request  # noqa: E402
from fuseraid.migration.resume import open_members  # noqa: E402

MIB = 1 << 20


def _array(folder: Path, member_mib: int) -> tuple[list[Path], list[Path], int]:
    dev = (member_mib - 4) * MIB // 2
    g = Geometry(5, 3, 2, 512 * 1024, dev)
    paths, extras, content = make_array(folder, g, member_bytes=member_mib * MIB,
                                        data_offset=2 * MIB, extra=1)
    return paths, extras, len(content)


def bench_offline(folder: Path, member_mib: int) -> tuple[float, float]:
    paths, extras, size = _array(folder / "off", member_mib)
    with open_members(paths) as ms:
        added = [(str(extras[0]), Member(extras[0]))]
        try:
            t0 = time.perf_counter()
            _, r = begin_reshape(ms.sbset, ms.by_role, Request(raid_disks=4), add=added)
            assert r is not None
            run_offline(r)
            mig = time.perf_counter() - t0
        finally:
            added[0][1].close()
    # dd: read the same number of bytes from a member file and write them to another
    src, dst = paths[0], folder / "dd.out"
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", f"count={size // MIB}",
                    "conv=fsync", "status=none"], check=True)
    dd = time.perf_counter() - t0
    os.unlink(dst)
    return size / MIB / mig, size / MIB / dd


async def _iops(array, size: int, seconds: float, rng: random.Random,
                stop: trio.Event | None = None) -> float:
    """4 KiB random reads per second for `seconds` (or until `stop` is set)."""
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds and not (stop is not None and stop.is_set()):
        await array.read(rng.randrange(0, size // 4096) * 4096, 4096)
        n += 1
    return n / (time.perf_counter() - t0)


async def bench_live(folder: Path, member_mib: int, seconds: float) -> tuple[float, float]:
    paths, extras, size = _array(folder / "live", member_mib)
    rng = random.Random(1)
    async with open_array([str(p) for p in paths]) as array, trio.open_nursery() as nursery:
        idle = await _iops(array, size, seconds, rng)
        r = await start_live_reshape(array, nursery, Request(raid_disks=4),
                                     add=[str(extras[0])])
        assert r is not None
        during = await _iops(array, size, seconds, rng, array.reshape_control.finished)
        assert not array.reshape_control.finished.is_set() or array.reshape is None
        await array.reshape_control.finished.wait()
    return idle, during


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member-mib", type=int, default=64)
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=a.dir) as d:
        mig, dd = bench_offline(Path(d), a.member_mib)
        print(f"migration raid5 3->4 disks: {mig:8.1f} MiB/s   dd copy: {dd:8.1f} MiB/s   "
              f"ratio {mig / dd:.2f}")
        idle, during = trio.run(bench_live, Path(d), a.member_mib, a.seconds)
        print(f"4 KiB random read IOPS: idle {idle:8.0f}   during migration {during:8.0f}   "
              f"ratio {during / idle:.2f}")


if __name__ == "__main__":
    main()
