"""A live reshape inside the mounted daemon: its speed next to the physical limit, and
4 KiB random read IOPS through the image before and during it.

For each case a fresh raid5 of 4 member files in /dev/shm is created
(`fuseraid create --assume-clean`, chunk 512K), mounted (`fuseraid mount`, the detached
daemon), its image filled once with dd, then:

- fio 4 KiB randread, libaio, direct=1, iodepth 16 on MNT/image runs the whole time,
  logging its IOPS every 100 ms with Unix time stamps;
- after --seconds of that, the grow is sent over the mount's control socket (what
  `fuseraid grow MNT ... --add M4` sends), and the status is polled over the same
  socket every 20 ms until no reshape is left (no `fuseraid` processes are started
  meanwhile: each costs ~0.2 s of CPU on this 2-core machine); then fio is stopped;
- idle IOPS = fio's samples of the --seconds before the grow (the first second
  skipped: fio's start), during = its samples between the grow and the end of the
  reshape; ratio = during / idle;
- migration MiB/s = the array's content bytes before the grow (the old size: what
  moves) / seconds from the grow request to the status showing it finished; also over
  the status's total_bytes (the span the reshape walks: the new size when growing);
- physical limit, after unmounting, on the same page-cached member files: `dd`
  reading every old member's old data area and `dd` writing every new member's new
  data area (conv=fsync), bs=1M, as benchmarks/bench_reshape.py does; dd MiB/s is over
  the same content bytes; copy ratio = migration MiB/s / dd MiB/s.

With --no-fio the same runs without fio (the migration alone; IOPS columns empty).
Cases: "grow" = raid5 4 -> 5 disks, "raid6" = raid5 4 disks -> raid6 5 disks. Each case
is repeated --repeat times, interleaved; medians (and the spread) are printed last.
Needs root (FUSE) and fio.

    sudo .venv/bin/python benchmarks/bench_reshape_fuse.py [--member-mib 1024]
        [--seconds 3] [--repeat 3] [--case grow|raid6|all] [--dir /dev/shm] [--no-fio]
        [--tree DIR]    # the daemon from another copy of the tree (before/after runs)

Everything it creates (member files, mount, daemon, fio) is removed on the way out,
also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
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
sys.path.insert(0, str(ROOT))

from fuseraid.front.control import find_socket, request_socket  # noqa: E402
from fuseraid.superblock.codec import read_superblock  # noqa: E402

FUSERAID = [sys.executable, "-m", "fuseraid.cli.main"]
MIB = 1 << 20
CASES = {
    "grow": ("raid5 4 -> 5 disks", {"raid_disks": 5}),
    "raid6": ("raid5 4 -> raid6 5 disks", {"level": 6, "raid_disks": 5}),
}


TREE = ROOT  # where `python -m fuseraid.cli.main` imports fuseraid from (--tree)


def run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=TREE, **kw)


def fio_cmd(image: Path, seconds: float, log: Path) -> list[str]:
    return [
        "fio", "--name=rr", f"--filename={image}", "--rw=randread", "--bs=4k",
        "--iodepth=16", "--ioengine=libaio", "--direct=1", f"--runtime={seconds}",
        "--time_based", "--output-format=json", "--randrepeat=0",
        f"--write_iops_log={log}", "--log_avg_msec=100", "--log_unix_epoch=1",
    ]  # fmt: skip


def iops_samples(log: Path) -> list[tuple[float, float]]:
    """(unix seconds at the end of the 100 ms interval, IOPS in it) from fio's log."""
    out = []
    for f in sorted(log.parent.glob(log.name + "_iops*.log")):
        for line in f.read_text().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) >= 2 and parts[0].isdigit():
                out.append((int(parts[0]) / 1000, float(parts[1])))
    return sorted(out)


def mean_between(samples: list[tuple[float, float]], a: float, b: float) -> float:
    vals = [v for t, v in samples if a < t <= b]
    if not vals:
        raise RuntimeError(f"no fio samples between {a:.2f} and {b:.2f}")
    return statistics.fmean(vals)


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


class Mount:
    """A mounted raid5 over 4 fresh member files (a 5th, zero-filled, to add)."""

    def __init__(self, work: Path, member_mib: int) -> None:
        self.work = work
        self.members = [work / f"m{i}.img" for i in range(5)]
        self.mnt = work / "mnt"
        self.member_mib = member_mib
        self.pid: int | None = None
        self.sock = ""
        self.log = work / "daemon.log"

    def reshape_line(self) -> str:
        """The daemon's log line summing up the pass (windows, batches)."""
        lines = [ln for ln in self.log.read_text().splitlines() if "reshape: " in ln]
        return lines[-1].split("reshape: ", 1)[1] if lines else "?"

    def status(self) -> dict[str, Any]:
        return request_socket(self.sock, "status")

    def unmount(self) -> None:
        unmount(self.mnt, self.pid)
        self.pid = None


def populate(path: Path, member_mib: int) -> None:
    """A member file of member_mib MiB whose every page is written (zeros)."""
    run(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={member_mib}", "status=none"])


@contextlib.contextmanager
def array(work: Path, member_mib: int) -> Iterator[Mount]:
    m = Mount(work, member_mib)
    work.mkdir(parents=True)
    try:
        for p in m.members[:4]:
            with open(p, "wb") as f:
                f.truncate(member_mib * MIB)
        # the member to add is written once, as a disk has its blocks: in this VM a page
        # the host took back (free page reporting) costs ~10 us at first touch, which a
        # sparse file would pay during the migration and the dd reference (run after it,
        # on the same, by then populated files) would not
        populate(m.members[4], member_mib)
        m.mnt.mkdir()
        run([*FUSERAID, "create", "--level", "5", "--raid-devices", "4", "--assume-clean",
             *map(str, m.members[:4])])
        run([*FUSERAID, "mount", "-o", f"log={m.log}", *map(str, m.members[:4]), str(m.mnt)])
        m.sock = find_socket(str(m.mnt))
        m.pid = m.status()["pid"]
        # fill the image once so reads and the copy see written data
        size = (m.mnt / "image").stat().st_size
        run(["dd", "if=/dev/zero", f"of={m.mnt / 'image'}", "bs=1M", "oflag=direct",
             "iflag=count_bytes", f"count={size}", "conv=notrunc,nocreat", "status=none"])
        yield m
    finally:
        m.unmount()
        shutil.rmtree(work, ignore_errors=True)


def areas(paths: list[Path], roles: int) -> list[tuple[Path, int, int]]:
    """(member, data offset, data bytes) of the first `roles` members, from their
    superblocks (offset and size as the array uses them)."""
    out = []
    for p in paths[:roles]:
        sb = read_superblock(p)
        out.append((p, sb.data_offset_bytes, sb.size * 512))
    return out


def dd_limit(old: list[tuple[Path, int, int]], new: list[tuple[Path, int, int]]) -> float:
    """Seconds to read every old data area and write every new one (bs=1M)."""
    t0 = time.perf_counter()
    for p, off, n in old:
        run(["dd", "bs=1M", "status=none", f"if={p}", "of=/dev/null",
             "iflag=skip_bytes,count_bytes", f"skip={off}", f"count={n}"])
    for p, off, n in new:
        run(["dd", "bs=1M", "status=none", "if=/dev/zero", f"of={p}", "iflag=count_bytes",
             "oflag=seek_bytes", "conv=notrunc,fsync", f"seek={off}", f"count={n}"])
    return time.perf_counter() - t0


def one(work: Path, member_mib: int, seconds: float, case: str,
        use_fio: bool) -> dict[str, float]:
    args = CASES[case][1]
    fio: subprocess.Popen[str] | None = None
    log = work.parent / f"{work.name}-fio"
    with array(work, member_mib) as m:
        old = areas(m.members, 4)
        content = m.status()["size"]
        try:
            if use_fio:
                # its own process group: a Ctrl-C at the terminal reaches only us, and
                # stop() ends fio and its job process together
                fio = subprocess.Popen(fio_cmd(m.mnt / "image", 3600, log),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
                time.sleep(seconds)
                if fio.poll() is not None:
                    raise RuntimeError(f"fio failed: {fio.communicate()[1].strip()}")
            t_grow, t0 = time.time(), time.monotonic()
            request_socket(m.sock, "grow", add=[str(m.members[4])], **args)
            total = 0
            while True:
                task = m.status().get("task")
                if not (task and task.get("name") == "reshape"):
                    break
                total = task.get("total_bytes") or total
                time.sleep(0.02)
            took = time.monotonic() - t0
            t_done = time.time()
        finally:
            stop(fio)
        st = m.status()
        if st["raid_disks"] != 5 or st["level"] != (6 if case == "raid6" else 5) \
                or st.get("task"):
            raise RuntimeError(f"reshape did not finish as asked: {st}")
        total = total or st["size"]
        m.unmount()  # dd writes the members: nobody else may
        print(f"  daemon: {m.reshape_line()}", flush=True)
        new = areas(m.members, 5)
        dd = dd_limit(old, new)
        res = {"mig_s": took, "content_mibs": content / MIB / took,
               "total_mibs": total / MIB / took, "dd_mibs": content / MIB / dd}
        res["copy_ratio"] = res["content_mibs"] / res["dd_mibs"]
        if use_fio:
            samples = iops_samples(log)
            res["idle"] = mean_between(samples, t_grow - seconds + 1.0, t_grow)
            res["during"] = mean_between(samples, t_grow + 0.1, t_done)
            res["ratio"] = res["during"] / res["idle"]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--member-mib", type=int, default=1024)
    ap.add_argument("--seconds", type=float, default=3.0, help="fio seconds before the grow")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--case", choices=[*CASES, "all"], default="all")
    ap.add_argument("--dir", default="/dev/shm")
    ap.add_argument("--no-fio", action="store_true", help="the migration alone")
    ap.add_argument("--tree", type=Path, default=ROOT,
                    help="run the daemon from this copy of the source tree (A/B runs)")
    a = ap.parse_args()
    global TREE
    TREE = a.tree.resolve()
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
                r = one(top / f"{c}{i}", a.member_mib, a.seconds, c, not a.no_fio)
                res[c].append(r)
                fio = (f"idle {r['idle']:6.0f} IOPS  during {r['during']:6.0f} IOPS  ratio "
                       f"{r['ratio']:.2f}  " if "ratio" in r else "")
                print(f"{CASES[c][0]}: {fio}migration {r['content_mibs']:6.0f} MiB/s "
                      f"({r['mig_s']:.2f} s; over total_bytes {r['total_mibs']:.0f})  dd "
                      f"{r['dd_mibs']:6.0f} MiB/s  copy ratio {r['copy_ratio']:.2f}",
                      flush=True)
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print()
    print(f"medians of {a.repeat} [min-max] (member files {a.member_mib} MiB"
          + (", no fio)" if a.no_fio else ", fio 4 KiB randread qd16 libaio direct=1)"))
    print("| case | idle IOPS | IOPS during | IOPS ratio | migration MiB/s | dd MiB/s "
          "| copy ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for c, rs in res.items():
        def med(k: str, fmt: str, rs: list[dict[str, float]] = rs) -> str:
            if k not in rs[0]:
                return "-"
            v = [r[k] for r in rs]
            spread = f" [{min(v):{fmt}}-{max(v):{fmt}}]" if len(v) > 1 and "ratio" in k \
                else ""
            return f"{statistics.median(v):{fmt}}{spread}"
        print(f"| {CASES[c][0]} | {med('idle', '.0f')} | {med('during', '.0f')} | "
              f"{med('ratio', '.2f')} | {med('content_mibs', '.0f')} | "
              f"{med('dd_mibs', '.0f')} | {med('copy_ratio', '.2f')} |")


if __name__ == "__main__":
    main()
