"""Where the trio thread's time goes per 4 KiB request through the mount (docs/PERFORMANCE.md,
"The fast paths for small requests"): one fio job against the fuseraid daemon (or the
bare pyfuse3 image), and over a 5 s window in its middle

- the daemon's per-thread CPU from /proc/PID/task/*/stat (CPU per request = CPU / IOPS);
- for fuseraid, the time spent inside ImageFS.read/write (perf_counter_ns around the
  handler: everything of ours from the handler down to the member syscalls and back);
- with --py-spy, a second fio job profiled by `py-spy record --native`, each trio-thread
  sample charged to the innermost frame of ours, pyfuse3 (with libfuse) or trio.

    sudo .venv/bin/python benchmarks/profile_fuse.py --level 0 [--rw randread] \\
        [--env FUSERAID_FAST=0] [--py-spy /tmp/pyspy/bin/py-spy]

`--serve-timed` is internal: the daemon with the handlers timed (SIGUSR1 dumps the
counters to the file given).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fuse import PY, ROOT, process_mount  # noqa: E402

OURS = re.compile(r"\(fuseraid/(front/fs|engine|member|layout)/?[\w/]*\.py:")
PYFUSE = re.compile(r"pyfuse3|fuse_|libfuse|async_wrapper")
TRIO = re.compile(r"\(trio/|outcome/|epoll")
# the finer split of the write path (docs/PERFORMANCE.md, "Writes: where the time goes"):
# (category, pattern on a frame "function (file:line)"), first match from the innermost
RING = r" \(fuseraid/(engine/ring|member/uring)\.py"
DETAIL = [
    ("io_uring submit", re.compile(r"^(\w+\.)?(before_io_wait|_submit|submit)" + RING
                                   + r"|fr_ring_submit|io_uring_submit")),
    ("io_uring reaper", re.compile(r"^(\w+\.)?(run|_reap|reap|clear_eventfd)" + RING
                                   + r"|fr_ring_reap")),
    ("io_uring queue", re.compile(r"\(fuseraid/(engine/ring|member/uring)\.py|fr_ring_write")),
    ("pool hooks", re.compile(r"\(fuseraid/engine/workers\.py")),
    ("ours", OURS),
    ("pyfuse3", PYFUSE),
    ("trio epoll", re.compile(r"^(get_events|_epoll_wait|wait_readable|epoll_wait|"
                              r"handle_io|process_events) |epoll")),
    ("trio scheduler", re.compile(r"\(trio/|outcome/")),
]


def serve_timed(dump: str, argv: list[str]) -> None:
    """`fuseraid mount -f ...` with ImageFS.read/write timed."""
    from fuseraid.cli.main import main
    from fuseraid.front import fs

    acc = {"read": [0, 0], "write": [0, 0]}
    clock = time.perf_counter_ns

    def timed(name: str):  # noqa: ANN202
        orig = getattr(fs.ImageFS, name)

        async def handler(self, *args):  # noqa: ANN001, ANN202
            t = clock()
            try:
                return await orig(self, *args)
            finally:
                a = acc[name]
                a[0] += clock() - t
                a[1] += 1
        return handler

    fs.ImageFS.read = timed("read")  # type: ignore[method-assign]
    fs.ImageFS.write = timed("write")  # type: ignore[method-assign]
    signal.signal(signal.SIGUSR1, lambda *_: Path(dump).write_text(json.dumps(acc)))
    sys.exit(main(argv))


def thread_cpu(pid: int) -> dict[str, tuple[str, float]]:
    """tid -> (name, user+system seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            s = f.read()
        rest = s[s.rindex(")") + 2 :].split()
        out[tid] = (s[s.index("(") + 1 : s.rindex(")")], (int(rest[11]) + int(rest[12])) / tick)
    return out


def fio(image: Path, rw: str, runtime: int, size_mib: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["fio", "--name=p", f"--filename={image}", f"--rw={rw}", "--bs=4k", "--iodepth=16",
         "--ioengine=libaio", "--direct=1", f"--size={size_mib}M", f"--runtime={runtime}",
         "--time_based", "--output-format=json"], stdout=subprocess.PIPE, text=True)


def iops(p: subprocess.Popen[str]) -> float:
    out, _ = p.communicate()
    job = json.loads(out)["jobs"][0]
    return max(job["read"]["iops"], job["write"]["iops"])


def shares(raw: Path, detail: bool = False) -> dict[str, float]:
    """py-spy raw output: the trio thread's samples by innermost named frame (detail:
    by the finer DETAIL categories)."""
    count: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frames = stack.split(";")
        if not any("trio/_core/_run.py" in f for f in frames):
            continue  # another thread (the trio thread is inside trio.run, in or out of epoll)
        kind = ""
        if detail:
            kind = next((name for f in reversed(frames) for name, pat in DETAIL
                         if pat.search(f)), "other")
        for f in ([] if kind else reversed(frames)):
            kind = ("ours" if OURS.search(f) else "pyfuse3" if PYFUSE.search(f)
                    else "trio" if TRIO.search(f) else "")
            if kind:
                break
        count[kind or "other"] += int(n)
    total = sum(count.values()) or 1
    return {k: v / total for k, v in count.most_common()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--level", default="0", help="0, 5 (fuseraid over 3 files) or bare")
    ap.add_argument("--rw", default="randread", choices=["randread", "randwrite"])
    ap.add_argument("--size-mib", type=int, default=190)
    ap.add_argument("--env", action="append", default=[], metavar="VAR=VALUE")
    ap.add_argument("--py-spy", default=None, help="py-spy binary: also sample (--native)")
    ap.add_argument("--raw-out", default=None, help="keep py-spy's raw samples here")
    ap.add_argument("--serve-timed", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_timed:
        serve_timed(args.serve_timed[0], args.serve_timed[1:])
        return
    work = Path(tempfile.mkdtemp(prefix="profile-fuse-"))
    env = dict(e.split("=", 1) for e in args.env)
    dump = work / "handlers.json"
    mp = work / "mp"
    mp.mkdir()
    try:
        if args.level == "bare":
            cmd = [PY, str(ROOT / "benchmarks" / "bare_pyfuse3.py"), str(mp),
                   str(args.size_mib)]
        else:
            members = []
            for i in range(3):
                m = work / f"m{i}"
                with open(m, "wb") as f:
                    f.truncate((args.size_mib // 2 + 8) << 20)
                members.append(str(m))
            subprocess.run([PY, "-m", "fuseraid.cli.main", "create", f"--level={args.level}",
                            "--raid-devices=3", "--assume-clean", *members],
                           check=True, capture_output=True)
            cmd = [PY, __file__, "--serve-timed", str(dump), "mount", "-f", *members, str(mp)]
        with process_mount(cmd, mp, mp / "image", env) as image:
            subprocess.run(["dd", "if=/dev/zero", f"of={image}", "bs=1M", "oflag=direct",
                            f"count={args.size_mib}", "conv=notrunc,nocreat"],
                           check=True, capture_output=True)
            pid = int(subprocess.run(["pgrep", "-f", "-n", str(mp)], capture_output=True,
                                     text=True, check=True).stdout.split()[0])
            job = fio(image, args.rw, 9, args.size_mib)
            time.sleep(2)
            cpu0, t0 = thread_cpu(pid), time.monotonic()
            if args.level != "bare":
                os.kill(pid, signal.SIGUSR1)
                time.sleep(0.2)
                h0 = json.loads(dump.read_text())
            time.sleep(5)
            cpu1, t1 = thread_cpu(pid), time.monotonic()
            if args.level != "bare":
                os.kill(pid, signal.SIGUSR1)
                time.sleep(0.2)
                h1 = json.loads(dump.read_text())
            rate = iops(job)
            target = "bare pyfuse3" if args.level == "bare" else f"raid{args.level}"
            print(f"{args.rw} 4K qd16, {target} {' '.join(args.env)}: {rate / 1000:.1f}k IOPS")
            for tid, (name, sec) in cpu1.items():
                used = (sec - cpu0.get(tid, (name, 0.0))[1]) / (t1 - t0)
                if used > 0.02:
                    print(f"  thread {tid} {name}: {used * 100:.0f}% of a core, "
                          f"{used / rate * 1e6:.1f} us per request")
            if args.level != "bare":
                for op in ("read", "write"):
                    n = h1[op][1] - h0[op][1]
                    if n:
                        print(f"  inside ImageFS.{op}: {(h1[op][0] - h0[op][0]) / n / 1000:.2f} "
                              f"us per request ({n} requests)")
            if args.py_spy:
                raw = work / "raw.txt"
                job = fio(image, args.rw, 8, args.size_mib)
                time.sleep(2)
                subprocess.run([args.py_spy, "record", "--native", "-r", "200", "-d", "5", "-f",
                                "raw", "-o", str(raw), "-p", str(pid)], capture_output=True)
                iops(job)
                if args.raw_out:
                    shutil.copy(raw, args.raw_out)
                print("  py-spy --native, trio thread: " + ", ".join(
                    f"{k} {v * 100:.1f}%" for k, v in shares(raw).items()))
                print("  the same, finer: " + ", ".join(
                    f"{k} {v * 100:.1f}%" for k, v in shares(raw, detail=True).items()))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
