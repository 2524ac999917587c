"""4 KiB random read IOPS through the mounted image, idle vs during a live reshape.

For each case a fresh raid5 of 4 member files in /dev/shm is created
(`fuseraid create --assume-clean`), mounted (`fuseraid mount`), its image filled once
with dd, then:

- idle: fio 4 KiB randread, libaio, direct=1, iodepth 16, --seconds long;
- during: `fuseraid grow MNT ...` is started, fio (the same job, time based with a
  generous cap) runs at once, `fuseraid status --json MNT` is polled every 50 ms and
  fio is stopped with SIGINT (it then reports what it did so far) as soon as the status
  no longer shows a reshape; so fio runs only while the reshape does;
- migration MiB/s = the reshape's total_bytes (from the status: the span of array
  addresses the reshape walks, the larger of old and new array size) / the seconds from
  starting `fuseraid grow` to the status showing it finished (poll granularity 50 ms);
  also printed over the old array size (the content moved, as bench_reshape.py counts).

Cases: "grow" = raid5 4 -> 5 disks, "raid6" = raid5 4 disks -> raid6 5 disks. Ratios
are within one run (during / idle of the same array, a few seconds apart); each case is
repeated --repeat times and the medians are printed. Needs root (FUSE) and fio.

    sudo .venv/bin/python benchmarks/bench_reshape_fuse.py [--member-mib 1024]
        [--seconds 3] [--repeat 3] [--case grow|raid6|all] [--dir /dev/shm]

Everything it creates (member files, mount, daemon, fio and grow processes) is removed
on the way out, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FUSERAID = [sys.executable, "-m", "fuseraid.cli.main"]
MIB = 1 << 20
CASES = {
    "grow": ("raid5 4 -> 5 disks", ["--raid-devices", "5"]),
    "raid6": ("raid5 4 -> raid6 5 disks", ["--level", "6", "--raid-devices", "5"]),
}


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT, **kw)


def fio_cmd(image: Path, seconds: float) -> list[str]:
    return [
        "fio", "--name=rr", f"--filename={image}", "--rw=randread", "--bs=4k",
        "--iodepth=16", "--ioengine=libaio", "--direct=1", f"--runtime={seconds}",
        "--time_based", "--output-format=json", "--randrepeat=0",
    ]  # fmt: skip


def fio_iops(out: str) -> tuple[float, float]:
    """(IOPS, seconds fio ran) from fio's JSON output (which may be preceded by a
    'terminating on signal' line)."""
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return job["read"]["iops"], job["read"]["runtime"] / 1000


def status(mnt: Path) -> dict[str, Any]:
    return json.loads(run([*FUSERAID, "status", "--json", str(mnt)]).stdout)


def mounted(mnt: Path) -> bool:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        if line.split()[4] == str(mnt):
            return True
    return False


def unmount(mnt: Path, pid: int | None) -> None:
    """fusermount3 -u, then umount, then a lazy unmount; then make sure the daemon is
    gone (SIGTERM, SIGKILL after 10 s)."""
    for cmd in (["fusermount3", "-u", str(mnt)], ["umount", str(mnt)],
                ["umount", "-l", str(mnt)]):
        if not mounted(mnt):
            break
        subprocess.run(cmd, capture_output=True)
        time.sleep(0.1)
    if pid is None:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        time.sleep(1)


def stop(p: subprocess.Popen[str] | None) -> None:
    """Stop fio and its job processes (its own process group): SIGINT, then SIGKILL."""
    if p is None or p.poll() is not None:
        return
    for sig in (signal.SIGINT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, sig)
        try:
            p.communicate(timeout=10)
            return
        except subprocess.TimeoutExpired:
            pass


@contextlib.contextmanager
def array(work: Path, member_mib: int) -> Iterator[tuple[Path, Path]]:
    """A mounted raid5 over 4 fresh member files; yields (mountpoint, spare file)."""
    work.mkdir(parents=True)
    members = [work / f"m{i}.img" for i in range(5)]
    mnt = work / "mnt"
    pid = None
    try:
        for m in members:
            with open(m, "wb") as f:
                f.truncate(member_mib * MIB)
        mnt.mkdir()
        run([*FUSERAID, "create", "--level", "5", "--raid-devices", "4", "--assume-clean",
             *map(str, members[:4])])
        run([*FUSERAID, "mount", *map(str, members[:4]), str(mnt)])
        pid = status(mnt)["pid"]
        # fill the image once so reads and the copy see written data
        size = (mnt / "image").stat().st_size
        run(["dd", "if=/dev/zero", f"of={mnt / 'image'}", "bs=1M", "oflag=direct",
             "iflag=count_bytes", f"count={size}", "conv=notrunc,nocreat", "status=none"])
        yield mnt, members[4]
    finally:
        unmount(mnt, pid)
        shutil.rmtree(work, ignore_errors=True)


def reshaping(st: dict[str, Any]) -> bool:
    task = st.get("task")
    return bool(task) and task.get("name") == "reshape"


def one(work: Path, member_mib: int, seconds: float, case: str) -> dict[str, float]:
    args = CASES[case][1]
    fio: subprocess.Popen[str] | None = None
    with array(work, member_mib) as (mnt, spare):
        image = mnt / "image"
        try:  # (Popen in its own group, not run(): stop() also ends fio's job process)
            fio = subprocess.Popen(fio_cmd(image, seconds), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
            out, err = fio.communicate(timeout=seconds + 60)
            if fio.returncode:
                raise RuntimeError(f"fio failed: {err.strip()}")
            idle, _ = fio_iops(out)
        finally:
            stop(fio)
        content = status(mnt)["size"]
        try:
            t0 = time.monotonic()
            run([*FUSERAID, "grow", str(mnt), *args, "--add", str(spare)])
            # its own process group: a Ctrl-C at the terminal reaches only us, and we
            # stop fio and its job processes together
            fio = subprocess.Popen(fio_cmd(image, 120), stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True, start_new_session=True)
            total = 0
            while True:
                st = status(mnt)
                if not reshaping(st):
                    break
                total = st["task"]["total_bytes"] or total
                time.sleep(0.05)
            took = time.monotonic() - t0
            os.killpg(fio.pid, signal.SIGINT)
            out, err = fio.communicate(timeout=30)
            during, fio_s = fio_iops(out)
        finally:
            stop(fio)
        st = status(mnt)
        want_level = 6 if case == "raid6" else 5
        if st["raid_disks"] != 5 or st["level"] != want_level or st.get("task"):
            raise RuntimeError(f"reshape did not finish as asked: {st}")
        if not total:
            total = st["size"]
    return {"idle": idle, "during": during, "ratio": during / idle, "fio_s": fio_s,
            "mig_s": took, "mig_mibs": total / MIB / took,
            "content_mibs": content / MIB / took}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member-mib", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0, help="idle fio seconds")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--dir", default="/dev/shm")
    a = ap.parse_args()
    # SIGINT (also when started in the background, where it would be ignored) and
    # SIGTERM unwind as KeyboardInterrupt, through every finally below
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    cases = list(CASES) if a.case == "all" else [a.case]
    res: dict[str, list[dict[str, float]]] = {c: [] for c in cases}
    top = Path(tempfile.mkdtemp(prefix="bench-reshape-fuse-", dir=a.dir))
    try:
        for i in range(a.repeat):
            for c in cases:
                r = one(top / f"{c}{i}", a.member_mib, a.seconds, c)
                res[c].append(r)
                print(f"{CASES[c][0]}: idle {r['idle']:7.0f} IOPS   during {r['during']:7.0f}"
                      f" IOPS (fio {r['fio_s']:.2f} s)   ratio {r['ratio']:.2f}   migration "
                      f"{r['mig_mibs']:6.1f} MiB/s ({r['mig_s']:.2f} s; old content "
                      f"{r['content_mibs']:.1f} MiB/s)", flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print()
    print(f"medians of {a.repeat} (member files {a.member_mib} MiB, fio 4 KiB randread "
          "qd16 libaio direct=1)")
    print("| case | idle IOPS | IOPS during | ratio | migration MiB/s | (old content) MiB/s "
          "| fio during (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c, rs in res.items():
        def med(k: str, rs: list[dict[str, float]] = rs) -> float:
            return statistics.median(r[k] for r in rs)
        print(f"| {CASES[c][0]} | {med('idle'):.0f} | {med('during'):.0f} | "
              f"{med('ratio'):.2f} | {med('mig_mibs'):.0f} | {med('content_mibs'):.0f} | "
              f"{med('fio_s'):.1f} |")


if __name__ == "__main__":
    main()
