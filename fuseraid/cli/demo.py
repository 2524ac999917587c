"""`fuseraid demo`: the whole path on real files, narrated: member files in a temporary
folder, create a RAID5 on 3 disks, mount it, ext4 on the image through a loop device,
write files and verify their checksums, show the status; then a live migration under
load: while a writer keeps writing and verifying its own files on the ext4, the RAID5 on
3 disks becomes a RAID6 on 5 (`fuseraid grow --level 6 --raid-devices 5 --add ...`),
with its progress shown; at the end every file is checked, `fuseraid check` must find 0
mismatches and fsck.ext4 -n must be clean. Everything is torn down at the end (always,
also on error or Ctrl-C)."""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from fuseraid.errors import FuseraidError


class DemoError(FuseraidError):
    """A demo step failed."""


class Demo:
    """State shared by the steps: paths, the mounts and a few helpers."""

    def __init__(self, workdir: Path, disk_mib: int, disks: int, files: int) -> None:
        self.workdir = workdir
        self.disk_mib = disk_mib
        self.disks = disks
        self.files = files
        self.members: list[Path] = []
        self.spares: list[Path] = []  # made on demand by make_member()
        self.mountpoint = workdir / "array"  # fuseraid mount: holds `image`
        self.fsdir = workdir / "fs"  # the ext4 on the image
        self.loopdev = ""
        self.checksums: dict[str, str] = {}
        self.stack = contextlib.ExitStack()
        self.started = time.monotonic()

    # ---- narration and commands ----------------------------------------------------

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def sh(self, *cmd: str | Path, check: bool = True) -> subprocess.CompletedProcess:
        p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if check and p.returncode != 0:
            err = (p.stderr or p.stdout).strip().splitlines()
            raise DemoError(f"{' '.join(map(str, cmd))}: {err[-1] if err else p.returncode}")
        return p

    def fuseraid(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess:
        return self.sh(sys.executable, "-m", "fuseraid.cli.main", *args, check=check)

    def make_member(self, name: str) -> Path:
        p = self.workdir / name
        with open(p, "wb") as f:
            f.truncate(self.disk_mib << 20)
        return p

    @property
    def image(self) -> Path:
        return self.mountpoint / "image"

    # ---- files on the ext4 ----------------------------------------------------------

    def write_files(self, count: int, prefix: str) -> None:
        rng = random.Random(prefix)
        for i in range(count):
            name = f"{prefix}{i:03d}.bin"
            data = rng.randbytes(rng.choice([4096, 65536, 1 << 20, rng.randrange(2 << 20)]))
            (self.fsdir / name).write_bytes(data)
            self.checksums[name] = hashlib.sha256(data).hexdigest()
        self.sh("sync", "-f", self.fsdir / next(iter(self.checksums)))

    def verify_files(self) -> None:
        for name, digest in self.checksums.items():
            got = hashlib.sha256((self.fsdir / name).read_bytes()).hexdigest()
            if got != digest:
                raise DemoError(f"{name}: checksum mismatch")

    def show_status(self) -> None:
        for line in self.fuseraid("status", self.mountpoint).stdout.rstrip().splitlines():
            print("    " + line)

    # ---- mounts with guaranteed teardown --------------------------------------------

    def mount_array(self) -> None:
        self.mountpoint.mkdir(exist_ok=True)
        self.fuseraid("mount", *self.members, self.mountpoint)
        pid = json.loads(self.fuseraid("status", "--json", self.mountpoint).stdout)["pid"]
        self.stack.callback(self._unmount_array, pid)

    def _unmount_array(self, pid: int) -> None:
        _unmount(self.mountpoint)
        _wait_gone(pid, 60)

    def attach_loop(self) -> None:
        self.loopdev = self.sh("losetup", "--find", "--show", "--direct-io=on", self.image)
        self.loopdev = self.loopdev.stdout.strip()
        self.stack.callback(self._detach_loop, self.loopdev)

    def _detach_loop(self, dev: str) -> None:
        for _ in range(50):
            if not Path(f"/sys/block/{Path(dev).name}/loop/backing_file").exists():
                return  # already detached
            if subprocess.run(["losetup", "-d", dev], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        for _ in range(100):  # losetup -d is lazy: wait until the image is let go
            if not Path(f"/sys/block/{Path(dev).name}/loop/backing_file").exists():
                break
            time.sleep(0.1)

    def mount_fs(self) -> None:
        self.fsdir.mkdir(exist_ok=True)
        self.sh("mount", self.loopdev, self.fsdir)
        self.stack.callback(_unmount, self.fsdir)

    def remount_and_verify(self, fsck_said: str, done_said: str) -> None:
        """Drop every cache on the way: unmount the ext4, detach the loop device, fsck,
        then attach, mount and check every file again."""
        _unmount(self.fsdir)
        self.sh("losetup", "-d", self.loopdev)
        self._detach_loop(self.loopdev)
        fsck = self.sh("fsck.ext4", "-n", "-f", self.image, check=False)
        if fsck.returncode != 0:
            raise DemoError(f"fsck.ext4 -n found problems: {fsck.stdout.strip()[-200:]}")
        self.say(f"    fsck.ext4 -n: {fsck_said}")
        self.attach_loop()
        self.mount_fs()
        self.verify_files()
        self.say(f"    all checksums match {done_said}")


def _unmount(path: Path) -> None:
    for _ in range(100):
        if not os.path.ismount(path):
            return
        if subprocess.run(["umount", str(path)], capture_output=True).returncode == 0:
            return
        time.sleep(0.2)
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait for the daemon to exit (a zombie waiting for init to reap it counts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.1)


# ---- the steps ----------------------------------------------------------------------


def basic_steps(d: Demo) -> list[tuple[str, Callable[[], None]]]:
    def members() -> None:
        d.members = [d.make_member(f"disk{i}.img") for i in range(d.disks)]

    def create() -> None:
        d.fuseraid("create", "--level=5", f"--raid-devices={d.disks}", "--name=demo",
                   *d.members)

    def mount() -> None:
        d.mount_array()
        d.say(f"    {d.image}: {d.image.stat().st_size >> 20} MiB")

    def mkfs() -> None:
        d.attach_loop()
        d.sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", d.loopdev)
        d.mount_fs()

    def write() -> None:
        d.write_files(d.files, "file")
        d.verify_files()
        total = sum((d.fsdir / n).stat().st_size for n in d.checksums)
        d.say(f"    {len(d.checksums)} files, {total >> 20} MiB, all checksums match")

    def remount() -> None:
        d.remount_and_verify("clean", "after remount")

    return [
        (f"making {d.disks} member files of {d.disk_mib} MiB in {d.workdir}", members),
        (f"fuseraid create --level=5 --raid-devices={d.disks}", create),
        (f"fuseraid mount ... {d.mountpoint}", mount),
        ("mkfs.ext4 on the image through a loop device, mount it", mkfs),
        (f"writing {d.files} files and checking their sha256", write),
        ("fuseraid status", d.show_status),
        ("unmount, fsck, mount again, verify", remount),
    ]


class Writer(threading.Thread):
    """Load during the migration: writes files on the ext4 (fsync each), reads each back
    and compares, until stopped; records their checksums for the final verification."""

    def __init__(self, d: Demo) -> None:
        super().__init__(name="demo-writer", daemon=True)
        self.d = d
        self.stop = threading.Event()
        self.written = 0
        self.bytes = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random("writer")
        try:
            while not self.stop.is_set():
                name = f"live{self.written % 64:03d}.bin"  # rewrites old ones too
                data = rng.randbytes(rng.choice([4096, 65536, 256 << 10]))
                path = self.d.fsdir / name
                with open(path, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                if path.read_bytes() != data:
                    raise DemoError(f"{name}: read back differs from what was written")
                self.d.checksums[name] = hashlib.sha256(data).hexdigest()
                self.written += 1
                self.bytes += len(data)
                time.sleep(0.005)
        except BaseException as e:  # reported by finish()
            self.error = e

    def finish(self) -> None:
        self.stop.set()
        self.join(60)
        if self.error is not None:
            raise DemoError(f"the writer failed during the migration: {self.error}")


def migration_steps(d: Demo) -> list[tuple[str, Callable[[], None]]]:
    writer: list[Writer] = []

    def spares() -> None:
        d.spares = [d.make_member(f"disk{d.disks + i}.img") for i in range(2)]

    def start_writer() -> None:
        w = Writer(d)
        writer.append(w)
        d.stack.callback(w.stop.set)  # stopped before the ext4 goes away
        w.start()

    def grow() -> None:
        out = d.fuseraid("grow", d.mountpoint, "--level", "6", "--raid-devices",
                         str(d.disks + 2), "--add", *d.spares).stdout.strip()
        d.say(f"    {out}")
        last = -1.0
        deadline = time.monotonic() + 600
        while True:
            st = d.fuseraid("grow", "--status", d.mountpoint).stdout.strip()
            if "no reshape" in st:
                break
            if "stopped" in st or "error" in st:
                raise DemoError(f"the reshape stopped: {st}")
            pct = _percent(st)
            if pct is None or pct >= last + 20 or last < 0:
                d.say(f"    {st}; writer: {writer[0].written} files written")
                last = pct if pct is not None else last
            if time.monotonic() > deadline:
                raise DemoError("the reshape did not finish in 10 minutes")
            time.sleep(0.3)
        d.say("    reshape finished")

    def stop_writer() -> None:
        w = writer[0]
        w.finish()
        d.say(f"    the writer wrote and verified {w.written} files "
              f"({w.bytes >> 20} MiB) during the migration")
        d.verify_files()
        d.say(f"    all {len(d.checksums)} checksums match")

    def check() -> None:
        out = d.fuseraid("check", d.mountpoint).stdout.strip()
        d.say(f"    {out}")
        if " 0 mismatches" not in out:
            raise DemoError(f"fuseraid check: {out}")

    def remount() -> None:
        d.remount_and_verify("clean after the migration", "after the migration and a remount")

    n = d.disks + 2
    return [
        ("making 2 more member files for the new roles", spares),
        ("starting a writer that writes and verifies files on the ext4 all along",
         start_writer),
        (f"live migration under load: fuseraid grow --level 6 --raid-devices {n} --add "
         f"disk{d.disks}.img disk{d.disks + 1}.img", grow),
        ("stopping the writer, verifying every file", stop_writer),
        ("fuseraid status", d.show_status),
        ("fuseraid check (scrub: parity and Q against the data)", check),
        ("unmount, fsck, mount again, verify", remount),
    ]


def _percent(status: str) -> float | None:
    for word in status.replace(",", " ").split():
        if word.endswith("%"):
            try:
                return float(word[:-1])
            except ValueError:
                return None
    return None


@contextlib.contextmanager
def workdir(keep: bool, base: str | None) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="fuseraid-demo-", dir=base))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def run_demo(disk_mib: int, disks: int, files: int, keep: bool, base: str | None,
             migrate: bool = True) -> int:
    if os.geteuid() != 0:
        raise DemoError("the demo needs root (it uses loop devices and mounts)")
    for tool in ("losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount"):
        if shutil.which(tool) is None:
            raise DemoError(f"the demo needs {tool}, which is not installed")
    with workdir(keep, base) as wd:
        d = Demo(wd, disk_mib, disks, files)
        try:
            steps = basic_steps(d) + (migration_steps(d) if migrate else [])
            for text, step in steps:
                d.say(text)
                step()
        finally:
            # A second Ctrl-C must not cut the teardown short.
            old = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                d.say("cleaning up: unmount the ext4, detach the loop device, unmount the array")
                d.stack.close()
            finally:
                signal.signal(signal.SIGINT, old)
        d.say("done: every step passed" + (f"; files kept in {wd}" if keep else ""))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the narrated end-to-end demo (needs root)",
                       description="Create, mount and use a RAID5 of member files, with ext4 "
                       "on top, then migrate it live to a RAID6 on 5 disks while a writer "
                       "keeps writing and verifying files; verifies every step and cleans "
                       "up everything at the end.")
    p.add_argument("--disk-mib", type=int, default=128, help="size of each member (MiB)")
    p.add_argument("--disks", type=int, default=3, help="number of members for the RAID5")
    p.add_argument("--files", type=int, default=24, help="number of files to write")
    p.add_argument("--dir", default=None, help="where to make the temporary folder")
    p.add_argument("--keep", action="store_true", help="keep the member files afterwards")
    p.add_argument("--no-migration", dest="migrate", action="store_false",
                   help="skip the live migration to raid6 under load")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    try:
        return run_demo(args.disk_mib, args.disks, args.files, args.keep, args.dir,
                        args.migrate)
    except KeyboardInterrupt:
        print("interrupted: cleaned up", file=sys.stderr)
        return 130
