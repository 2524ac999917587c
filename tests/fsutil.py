"""Test helpers for real mounts, loop devices and daemons, each a context manager that
cleans up in `finally` (lazy unmount / kill as the last resort), so a failing test never
leaves a mount, a loop device or a process behind."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUSERAID = [sys.executable, "-m", "fuseraid.cli.main"]
HELPER = ROOT / "mount.fuseraid"


def run(
    cmd: list[str], check: bool = True, timeout: float = 120, **kw
) -> subprocess.CompletedProcess:
    """Run a command, capturing text output; raise with its stderr on failure."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} -> {p.returncode}\n{p.stdout}{p.stderr}")
    return p


def fuseraid(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    return run([*FUSERAID, *map(str, args)], check=check, timeout=timeout, cwd=ROOT)


# ---- mount table ----------------------------------------------------------------------


def mounts() -> list[tuple[str, str, str]]:
    """(source, mountpoint, fstype) of every mount, from /proc/self/mountinfo."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        rf = right.split()
        out.append((_unescape(rf[1]), _unescape(fields[4]), rf[0]))
    return out


def _unescape(s: str) -> str:
    return s.encode().decode("unicode_escape") if "\\" in s else s


def is_mounted(path: str | Path) -> bool:
    p = os.path.abspath(path)
    return any(mp == p for _, mp, _ in mounts())


def fstype(path: str | Path) -> str | None:
    p = os.path.abspath(path)
    found = [t for _, mp, t in mounts() if mp == p]
    return found[-1] if found else None


def unmount(path: str | Path, timeout: float = 30) -> None:
    """umount; on failure (busy, dead daemon) retry, then lazy unmount."""
    p = os.path.abspath(path)
    deadline = time.monotonic() + timeout
    while is_mounted(p):
        r = subprocess.run(["umount", p], capture_output=True, text=True)
        if r.returncode == 0:
            continue
        if time.monotonic() > deadline:
            subprocess.run(["umount", "-l", p], capture_output=True)
            break
        time.sleep(0.2)


def wait_gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie of ours counts as gone.
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX":
                return True
        except (FileNotFoundError, IndexError):
            return True
        time.sleep(0.1)
    return False


def daemon_pid(mountpoint: str | Path) -> int:
    r = fuseraid("status", "--json", str(mountpoint))
    return int(json.loads(r.stdout)["pid"])


def kill_daemon(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_gone(pid, 10)


@contextlib.contextmanager
def fuseraid_mount(
    members: list[str | Path], mountpoint: str | Path, options: str | None = None
) -> Iterator[Path]:
    """`fuseraid mount` (detached); yields the mount point. On exit: umount, wait for the
    daemon to finish its clean stop, kill it if it hangs."""
    mp = Path(mountpoint)
    mp.mkdir(parents=True, exist_ok=True)
    args = ["mount"] + (["-o", options] if options else []) + [str(m) for m in members] + [str(mp)]
    fuseraid(*args)
    pid = None
    try:
        pid = daemon_pid(mp)
        yield mp
    finally:
        unmount(mp)
        if pid is not None and not wait_gone(pid, 60):
            kill_daemon(pid)


# ---- loop devices and filesystems ----------------------------------------------------


@contextlib.contextmanager
def loop_device(image: str | Path, direct_io: bool = True) -> Iterator[str]:
    cmd = ["losetup", "--find", "--show"]
    if direct_io:
        cmd.append("--direct-io=on")
    dev = run([*cmd, str(image)]).stdout.strip()
    try:
        yield dev
    finally:
        detach_loop(dev)


def detach_loop(dev: str) -> None:
    """losetup -d (retrying while busy), then wait until the device lets go of its file."""
    backing = Path(f"/sys/block/{Path(dev).name}/loop/backing_file")
    for _ in range(50):
        if not backing.exists():
            return
        if subprocess.run(["losetup", "-d", dev], capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    for _ in range(100):  # losetup -d is lazy (autoclear)
        if not backing.exists():
            return
        time.sleep(0.1)


@contextlib.contextmanager
def fs_mount(dev: str, mountpoint: str | Path, options: str | None = None) -> Iterator[Path]:
    mp = Path(mountpoint)
    mp.mkdir(parents=True, exist_ok=True)
    run(["mount"] + (["-o", options] if options else []) + [dev, str(mp)])
    try:
        yield mp
    finally:
        unmount(mp)


def mkfs(kind: str, dev: str) -> None:
    if kind == "ext4":
        run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev])
    elif kind == "xfs":
        run(["mkfs.xfs", "-q", "-f", dev])
    else:
        raise ValueError(kind)


def fsck(kind: str, dev: str) -> subprocess.CompletedProcess:
    """Read-only check; returns the completed process (returncode 0 = clean)."""
    if kind == "ext4":
        return run(["fsck.ext4", "-n", "-f", dev], check=False)
    return run(["xfs_repair", "-n", dev], check=False)


# ---- file trees ------------------------------------------------------------------------


def make_tree(root: Path, seed: int, files: int = 40, max_size: int = 256 << 10) -> None:
    """A small tree of files with random sizes and content, in a few folders."""
    rng = random.Random(seed)
    for i in range(files):
        d = root / f"dir{i % 5}" / f"sub{i % 3}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.choice([0, 1, 511, 4096, 65537, rng.randrange(max_size)])
        (d / f"f{i}.bin").write_bytes(rng.randbytes(size))


def tree_digest(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def copy_tree(src: Path, dst: Path) -> None:
    shutil.copytree(src, dst, dirs_exist_ok=True)


def sha256_file(path: str | Path, length: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        left = length
        while left is None or left > 0:
            b = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
    return h.hexdigest()


def make_members(folder: Path, count: int, size: int, prefix: str = "m") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"{prefix}{i}.img"
        with open(p, "wb") as f:
            f.truncate(size)
        paths.append(p)
    return paths


# ---- arrays and the whole stack ------------------------------------------------------


def create_array(
    folder: Path,
    level: int,
    disks: int,
    member_mib: int,
    chunk: str | None = "64K",
    layout: str | None = None,
    assume_clean: bool = False,
) -> list[Path]:
    """Fresh member files and `fuseraid create` over them."""
    members = make_members(folder, disks, member_mib << 20)
    args = ["create", f"--level={level}", f"--raid-devices={disks}"]
    if chunk and level != 1:
        args.append(f"--chunk={chunk}")
    if layout:
        args.append(f"--layout={layout}")
    if assume_clean:
        args.append("--assume-clean")
    fuseraid(*args, *members)
    return members


@contextlib.contextmanager
def image_fs(
    members: list[Path], tmp: Path, kind: str = "ext4", mkfs_first: bool = False
) -> Iterator[tuple[Path, str, Path]]:
    """Mount the array, attach a loop device to its image, (mkfs and) mount the
    filesystem; yields (fuse mount point, loop device, filesystem mount point)."""
    with fuseraid_mount(members, tmp / "array") as mp, loop_device(mp / "image") as dev:
        if mkfs_first:
            mkfs(kind, dev)
        with fs_mount(dev, tmp / "fs") as fsdir:
            yield mp, dev, fsdir
