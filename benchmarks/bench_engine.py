"""Array engine throughput: GB/s of Array.read / Array.write with 1 MiB requests and
several in flight, on page-cached members (files in /dev/shm), for raid0, raid5, raid6
and raid1; next to the ceiling a single thread gets from os.pread on one member file.

Each request is one lock + one worker-thread hop that does the whole request in the
driver, so this measures the engine and the drivers together (no FUSE).

    .venv/bin/python benchmarks/bench_engine.py [--member-mib 64] [--inflight 4]
        [--rounds 5] [--dir /dev/shm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import trio

from fuseraid.engine.assemble import open_array
from fuseraid.engine.create import create

REQ = 1 << 20

ARRAYS = [
    ("raid0 4 disks, 512K", dict(level=0, raid_disks=4, chunk=512 << 10)),
    ("raid5 4 disks, 512K ls", dict(level=5, raid_disks=4, chunk=512 << 10)),
    ("raid5 4 disks, 64K ls", dict(level=5, raid_disks=4, chunk=64 << 10)),
    ("raid6 6 disks, 512K ls", dict(level=6, raid_disks=6, chunk=512 << 10)),
    ("raid1 2 disks", dict(level=1, raid_disks=2)),
]


async def _stream(array, inflight: int, write: bool, payload: bytes) -> float:
    """Seconds to read or write the whole array with `inflight` tasks, 1 MiB each."""
    size = array.size // REQ * REQ
    offsets = list(range(0, size, REQ))
    it = iter(offsets)

    async def worker() -> None:
        for off in it:
            if write:
                await array.write(off, payload)
            else:
                got = await array.read(off, REQ)
                assert len(got) == REQ

    t0 = time.perf_counter()
    async with trio.open_nursery() as n:
        for _ in range(inflight):
            n.start_soon(worker)
    return time.perf_counter() - t0


def _pread_ceiling(path: str, total: int) -> float:
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        for off in range(0, total, REQ):
            os.pread(fd, REQ, off)
        return total / (time.perf_counter() - t0) / 1e9
    finally:
        os.close(fd)


async def bench(args: argparse.Namespace) -> None:
    member = args.member_mib << 20
    payload = os.urandom(REQ)
    print(f"members {args.member_mib} MiB in {args.dir}, 1 MiB requests, "
          f"{args.inflight} in flight, median of {args.rounds} rounds")
    print(f"{'array':28} {'size MiB':>9} {'write GB/s':>11} {'read GB/s':>10}")
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        for label, kw in ARRAYS:
            paths = []
            for i in range(kw["raid_disks"]):
                p = os.path.join(d, f"{label.split()[0]}-{i}.img")
                with open(p, "wb") as f:
                    f.truncate(member)
                paths.append(p)
            await create(paths, assume_clean=True, **kw)
            w, r = [], []
            async with open_array(paths) as array:
                size = array.size // REQ * REQ
                await _stream(array, args.inflight, True, payload)  # warm: allocate pages
                for _ in range(args.rounds):
                    w.append(size / await _stream(array, args.inflight, True, payload) / 1e9)
                    r.append(size / await _stream(array, args.inflight, False, payload) / 1e9)
            print(f"{label:28} {size >> 20:>9} {statistics.median(w):>11.2f} "
                  f"{statistics.median(r):>10.2f}", flush=True)
            for p in paths:
                os.unlink(p)
        ref = os.path.join(d, "ref.img")
        with open(ref, "wb") as f:
            f.write(os.urandom(member))
        ceil = statistics.median(_pread_ceiling(ref, member) for _ in range(args.rounds))
        print(f"{'os.pread, 1 thread (ceiling)':28} {args.member_mib:>9} {'':>11} {ceil:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--member-mib", type=int, default=64)
    ap.add_argument("--inflight", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--dir", default="/dev/shm")
    trio.run(bench, ap.parse_args())


if __name__ == "__main__":
    main()
