"""fio through FUSE images, side by side in one run:

- fuseraid raid0 and raid5 over 3 page-cached member files (the real engine),
- fuseraid's front over an in-memory array (front cost without the engine),
- the bare pyfuse3 in-memory image (benchmarks/bare_pyfuse3.py: the Python ceiling),
- qemu-storage-daemon's FUSE export of one raw file (a C FUSE server).

Jobs: 1 MiB sequential read/write (iodepth 4) and 4 KiB random read/write at iodepth 1
and 16; libaio, direct=1. Needs root (FUSE mounts) and fio.

    sudo .venv/bin/python benchmarks/bench_fuse.py [--runtime 5] [--size-mib 256]
        [--only TARGETS] [--jobs JOBS] [--ab VAR=VALUE ...]

`--ab FUSERAID_FAST=0` adds each fuseraid target again with that variable set in its
daemon's environment: an A/B whose both sides are in the same run.

Prints a Markdown table (MiB/s for 1 MiB jobs, IOPS for 4 KiB jobs).
`--serve-mem MOUNTPOINT SIZE_MIB` is internal: it runs the front over an in-memory array.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

Target = contextlib.AbstractContextManager[Any]
ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable

JOBS = [
    ("seq read 1M qd4", "read", "1M", 4),
    ("seq write 1M qd4", "write", "1M", 4),
    ("randread 4K qd1", "randread", "4k", 1),
    ("randread 4K qd16", "randread", "4k", 16),
    ("randwrite 4K qd1", "randwrite", "4k", 1),
    ("randwrite 4K qd16", "randwrite", "4k", 16),
]


# The page cache question (docs/fuse-front.md): the same raid0 with and without
# FOPEN_DIRECT_IO, read and written by applications that do and do not use O_DIRECT.
CACHE_JOBS = [
    ("seq write 1M buffered", "write", "1M", 1, 0),
    ("seq read 1M buffered", "read", "1M", 1, 0),
    ("seq write 1M O_DIRECT", "write", "1M", 4, 1),
    ("seq read 1M O_DIRECT", "read", "1M", 4, 1),
]


def fio(
    path: Path, rw: str, bs: str, depth: int, runtime: int, size_mib: int, direct: int = 1
) -> float:
    """MiB/s for 1M jobs, IOPS for 4k jobs."""
    cmd = [
        "fio", "--name=b", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
        f"--iodepth={depth}", "--ioengine=libaio", f"--direct={direct}", f"--size={size_mib}M",
        f"--runtime={runtime}", "--time_based", "--output-format=json",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    job = json.loads(out)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return side["bw"] / 1024 if bs == "1M" else side["iops"]


def wait_mounted(path: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            if line.split()[4] == str(path):
                return
        time.sleep(0.05)
    raise RuntimeError(f"{path} did not get mounted")


def unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def process_mount(cmd: list[str], mountpoint: Path, image: Path,
                  env: dict[str, str] | None = None) -> Iterator[Path]:
    """Run a foreground FUSE server (with `env` added to ours); yield the file to
    benchmark; stop it."""
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env={**os.environ, **env} if env else None)
    try:
        wait_mounted(mountpoint)
        yield image
    finally:
        unmount(mountpoint)
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def fuseraid_target(
    level: int, work: Path, size_mib: int, options: str | None = None,
    env: dict[str, str] | None = None,
) -> Callable[[], Target]:
    tag = "".join(f"-{k}{v}" for k, v in (env or {}).items())
    def make() -> Target:
        data_disks = 3 if level == 0 else 2
        member_mib = -(-size_mib // data_disks) + 8  # room for the superblock and offset
        members = []
        for i in range(3):
            m = work / f"r{level}{tag}-{i}.img"
            with open(m, "wb") as f:
                f.truncate(member_mib << 20)
            members.append(str(m))
        subprocess.run([PY, "-m", "fuseraid.cli.main", "create", f"--level={level}",
                        "--raid-devices=3", "--assume-clean", *members],
                       check=True, capture_output=True)
        mp = work / f"mp-r{level}{tag}"
        mp.mkdir(exist_ok=True)
        opts = ["-o", options] if options else []
        cmd = [PY, "-m", "fuseraid.cli.main", "mount", "-f", *opts, *members, str(mp)]
        return process_mount(cmd, mp, mp / "image", env)

    return make


def mem_target(work: Path, size_mib: int) -> Callable[[], Target]:
    def make() -> Target:
        mp = work / "mp-mem"
        mp.mkdir(exist_ok=True)
        cmd = [PY, str(Path(__file__)), "--serve-mem", str(mp), str(size_mib)]
        return process_mount(cmd, mp, mp / "image")

    return make


def bare_target(work: Path, size_mib: int) -> Callable[[], Target]:
    def make() -> Target:
        mp = work / "mp-bare"
        mp.mkdir(exist_ok=True)
        cmd = [PY, str(ROOT / "benchmarks" / "bare_pyfuse3.py"), str(mp), str(size_mib)]
        return process_mount(cmd, mp, mp / "image")

    return make


def qsd_target(work: Path, size_mib: int) -> Callable[[], Target]:
    def make() -> Target:
        raw = work / "qsd.raw"
        with open(raw, "wb") as f:
            f.truncate(size_mib << 20)
        mp = work / "qsd.export"
        mp.touch()
        cmd = [
            "qemu-storage-daemon", "--blockdev",
            f"node-name=f,driver=file,filename={raw}", "--export",
            f"type=fuse,id=e,node-name=f,mountpoint={mp},writable=on",
        ]  # fmt: skip
        return process_mount(cmd, mp, mp)

    return make


def serve_mem(mountpoint: str, size_mib: int) -> None:
    """fuseraid's daemon and front over an in-memory array."""
    import trio

    from fuseraid.front import daemon
    from fuseraid.front.options import MountOptions

    class MemArray:
        def __init__(self, size: int) -> None:
            self.size = size
            self.buf = bytearray(size)

        async def read(self, off: int, n: int) -> bytes:
            return bytes(self.buf[off : off + n])

        async def write(self, off: int, data: bytes) -> int:
            self.buf[off : off + len(data)] = data
            return len(data)

        async def flush(self) -> None:
            return None

        def status(self) -> dict:
            return {"level": "memory", "size": self.size, "members": [], "task": None}

    @contextlib.asynccontextmanager
    async def opener(paths: list[str], readonly: bool = False):
        yield MemArray(size_mib << 20)

    req = daemon.MountRequest(["memory"], os.path.abspath(mountpoint), MountOptions())
    trio.run(daemon.serve, req, lambda msg: None, opener)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runtime", type=int, default=5, help="seconds per fio job")
    ap.add_argument("--size-mib", type=int, default=256, help="image size")
    ap.add_argument("--only", default=None, help="comma separated target names")
    ap.add_argument("--cache-compare", action="store_true",
                    help="instead: raid0 with direct_io vs -o page_cache, buffered and O_DIRECT")
    ap.add_argument("--dir", default=None, help="where the member files go (default: /tmp)")
    ap.add_argument("--jobs", default=None,
                    help="comma separated job names (default: all), e.g. 'randread 4K qd16'")
    ap.add_argument("--ab", action="append", default=[], metavar="VAR=VALUE",
                    help="also run each fuseraid target with this environment variable "
                         "set (an A/B in the same run; repeatable; 'VAR=V VAR2=V2' sets "
                         "several at once)")
    ap.add_argument("--serve-mem", nargs=2, metavar=("MOUNTPOINT", "SIZE_MIB"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_mem:
        serve_mem(args.serve_mem[0], int(args.serve_mem[1]))
        return
    work = Path(tempfile.mkdtemp(prefix="bench-fuse-", dir=args.dir))
    if args.cache_compare:
        try:
            cache_compare(work, args)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    targets = {
        "fuseraid raid0": fuseraid_target(0, work, args.size_mib),
        "fuseraid raid5": fuseraid_target(5, work, args.size_mib),
        **{f"fuseraid raid{lv} {ab}": fuseraid_target(
               lv, work, args.size_mib, env=dict(kv.split("=", 1) for kv in ab.split()))
           for ab in args.ab for lv in (0, 5)},
        "fuseraid front (memory)": mem_target(work, args.size_mib),
        "bare pyfuse3 (memory)": bare_target(work, args.size_mib),
        "qemu-storage-daemon": qsd_target(work, args.size_mib),
    }
    if args.only:
        keep = {s.strip() for s in args.only.split(",")}
        targets = {k: v for k, v in targets.items() if k in keep}
    jobs = JOBS
    if args.jobs:
        keep_jobs = {s.strip() for s in args.jobs.split(",")}
        jobs = [j for j in JOBS if j[0] in keep_jobs]
    results: dict[str, list[float]] = {}
    try:
        for name, make in targets.items():
            with make() as image:
                # fill the image once so reads hit written data
                subprocess.run(["dd", "if=/dev/zero", f"of={image}", "bs=1M", "oflag=direct",
                                f"count={args.size_mib}", "conv=notrunc,nocreat"],
                               check=True, capture_output=True)
                results[name] = [fio(image, rw, bs, qd, args.runtime, args.size_mib)
                                 for _, rw, bs, qd in jobs]
            print(f"done: {name}", file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    head = "| target | " + " | ".join(j[0] for j in jobs) + " |"
    print(head)
    print("|" + "---|" * (len(jobs) + 1))
    for name, vals in results.items():
        cells = [f"{v:.0f} MiB/s" if bs == "1M" else f"{v / 1000:.1f}k IOPS"
                 for v, (_, _, bs, _) in zip(vals, jobs, strict=True)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    bare = results.get("bare pyfuse3 (memory)")
    if bare:  # the targets of issue "Device": >= 0.7x the bare pyfuse3 image
        print()
        print("| vs bare pyfuse3 | " + " | ".join(j[0] for j in jobs) + " |")
        print("|" + "---|" * (len(jobs) + 1))
        for name, vals in results.items():
            if name != "bare pyfuse3 (memory)":
                cells = [f"{v / b:.2f}x" if b else "-" for v, b in zip(vals, bare, strict=True)]
                print(f"| {name} | " + " | ".join(cells) + " |")


def cache_compare(work: Path, args: argparse.Namespace) -> None:
    rows = {}
    for name, opts in (("direct_io (default)", None), ("page_cache", "page_cache")):
        with fuseraid_target(0, work, args.size_mib, opts)() as image:
            rows[name] = [fio(image, rw, bs, qd, args.runtime, args.size_mib, direct)
                          for _, rw, bs, qd, direct in CACHE_JOBS]
        for m in work.glob("r0-*.img"):
            m.unlink()
    print("| fuseraid raid0 | " + " | ".join(j[0] for j in CACHE_JOBS) + " |")
    print("|" + "---|" * (len(CACHE_JOBS) + 1))
    for name, vals in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.0f} MiB/s" for v in vals) + " |")


if __name__ == "__main__":
    main()
