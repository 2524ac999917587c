"""Real filesystems on the image: fuseraid mount -> loop device -> ext4/xfs, for every
level; fio verify through the loop device, also while members fail and spares rebuild;
kill -9 of the daemon mid-write and recovery. The CI set is small; the full matrix is
@pytest.mark.slow."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fsutil import (
    copy_tree,
    create_array,
    daemon_pid,
    detach_loop,
    fs_mount,
    fsck,
    fuseraid,
    fuseraid_mount,
    image_fs,
    kill_daemon,
    loop_device,
    make_tree,
    tree_digest,
    unmount,
    wait_gone,
)

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="mounts and loop devices need root")

# (level, disks, layout)
LEVELS = [(0, 3, None), (1, 2, None), (4, 3, None), (5, 3, None), (6, 4, None), (10, 4, "n2")]
MORE_LAYOUTS = [
    (5, 4, "left-asymmetric"), (5, 4, "right-symmetric"), (5, 4, "parity-first"),
    (6, 5, "right-asymmetric"), (6, 5, "parity-last"), (10, 4, "f2"), (10, 4, "o2"),
    (10, 3, "n2"), (1, 3, None), (0, 4, None),
]  # fmt: skip


def status(mp) -> dict:
    return json.loads(fuseraid("status", "--json", mp).stdout)


def wait_idle(mp, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        st = status(mp)
        if st["task"] is None:
            return st
        assert time.monotonic() < deadline, f"task did not finish: {st['task']}"
        time.sleep(0.1)


def mismatches(mp) -> int:
    return int(json.loads(fuseraid("check", "--json", mp, check=False).stdout)["mismatches"])


def roundtrip(tmp: Path, members: list[Path], kind: str, level: int) -> None:
    """Copy a tree in, unmount everything, remount: fsck clean, same bytes, and the
    array's parity/mirrors consistent."""
    src = tmp / "src"
    make_tree(src, seed=level)
    want = tree_digest(src)
    with image_fs(members, tmp, kind, mkfs_first=True) as (_mp, _dev, fsdir):
        copy_tree(src, fsdir / "tree")
    with fuseraid_mount(members, tmp / "array") as mp:
        with loop_device(mp / "image") as dev:
            r = fsck(kind, dev)
            assert r.returncode == 0, r.stdout + r.stderr
            with fs_mount(dev, tmp / "fs", "ro") as fsdir:
                assert tree_digest(fsdir / "tree") == want
        if level != 0:
            assert mismatches(mp) == 0


@pytest.mark.parametrize("level,disks,layout", LEVELS, ids=lambda v: str(v))
def test_ext4_roundtrip(tmp_path, level, disks, layout):
    members = create_array(tmp_path / "m", level, disks, 24, layout=layout)
    roundtrip(tmp_path, members, "ext4", level)


def test_xfs_roundtrip_raid5(tmp_path):
    # xfs wants >= 300 MB; fresh zero members are consistent, so skip the initial sync
    members = create_array(tmp_path / "m", 5, 4, 112, assume_clean=True)
    roundtrip(tmp_path, members, "xfs", 5)


@pytest.mark.slow
@pytest.mark.parametrize("level,disks,layout", LEVELS + MORE_LAYOUTS, ids=lambda v: str(v))
def test_xfs_roundtrip_matrix(tmp_path, level, disks, layout):
    data_disks = {0: disks, 1: 1, 4: disks - 1, 5: disks - 1, 6: disks - 2, 10: disks / 2}[level]
    mib = int(330 / data_disks) + 2
    members = create_array(tmp_path / "m", level, disks, mib, layout=layout, assume_clean=True)
    roundtrip(tmp_path, members, "xfs", level)


@pytest.mark.slow
@pytest.mark.parametrize("level,disks,layout", MORE_LAYOUTS, ids=lambda v: str(v))
def test_ext4_roundtrip_more_layouts(tmp_path, level, disks, layout):
    members = create_array(tmp_path / "m", level, disks, 24, layout=layout)
    roundtrip(tmp_path, members, "ext4", level)


# ---- fio verify -----------------------------------------------------------------------


def fio(dev: str, *extra: str, size: str = "24M", bg: bool = False):
    cmd = [
        "fio", "--name=verify", f"--filename={dev}", "--ioengine=libaio", "--direct=1",
        "--iodepth=16", f"--size={size}", "--bsrange=4k-128k", "--verify=crc32c",
        "--verify_fatal=1", "--randrepeat=1", "--output-format=terse", *extra,
    ]  # fmt: skip
    if bg:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    return p


def finish(p: subprocess.Popen) -> None:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, out + err


def test_fio_verify_with_fail_and_rebuild(tmp_path):
    members = create_array(tmp_path / "m", 5, 3, 16)
    spare = tmp_path / "spare.img"
    spare.write_bytes(b"")
    os.truncate(spare, 16 << 20)
    with fuseraid_mount(members, tmp_path / "array") as mp, loop_device(mp / "image") as dev:
        fio(dev, "--rw=write")  # every block carries a verify header
        # a member fails while fio writes and verifies at random
        job = fio(dev, "--rw=randwrite", "--randseed=7", bg=True)
        time.sleep(0.3)
        fuseraid("fail", mp, members[1])
        finish(job)
        assert status(mp)["state"] == "degraded"
        fio(dev, "--rw=randwrite", "--randseed=7", "--verify_only")  # degraded reads
        # a spare rebuilds while fio writes and verifies
        fuseraid("remove", mp, members[1])
        job = fio(dev, "--rw=randwrite", "--randseed=8", bg=True)
        fuseraid("add", mp, spare)
        finish(job)
        st = wait_idle(mp)
        assert [m["state"] for m in st["members"]] == ["active"] * 3, st
        assert mismatches(mp) == 0
        fio(dev, "--rw=randwrite", "--randseed=8", "--verify_only")
    # and the rebuilt array without the failed member reads the same after a remount
    members[1] = spare
    with fuseraid_mount(members, tmp_path / "array", "ro") as mp, loop_device(mp / "image") as dev:
        fio(dev, "--rw=randwrite", "--randseed=8", "--verify_only")


def test_fio_verify_raid6_two_failed(tmp_path):
    members = create_array(tmp_path / "m", 6, 5, 12)
    with fuseraid_mount(members, tmp_path / "array") as mp, loop_device(mp / "image") as dev:
        fio(dev, "--rw=write")
        fuseraid("fail", mp, members[0])
        job = fio(dev, "--rw=randwrite", "--randseed=3", bg=True)
        time.sleep(0.3)
        fuseraid("fail", mp, members[3])
        finish(job)
        assert status(mp)["state"] == "degraded"
        fio(dev, "--rw=randwrite", "--randseed=3", "--verify_only")
    # assembled again from the three survivors alone
    survivors = [members[1], members[2], members[4]]
    with fuseraid_mount(survivors, tmp_path / "array", "ro") as mp:
        with loop_device(mp / "image") as dev:
            fio(dev, "--rw=randwrite", "--randseed=3", "--verify_only")


# ---- crash ------------------------------------------------------------------------------

WRITER = """
import os, sys, random
root = sys.argv[1]
rng = random.Random(5)
i = 0
while True:
    with open(os.path.join(root, f"late{i}.bin"), "wb") as f:
        f.write(rng.randbytes(rng.randrange(1 << 18)))
    i += 1
"""


def test_kill9_then_resync(tmp_path):
    members = create_array(tmp_path / "m", 5, 3, 24)
    src = tmp_path / "src"
    make_tree(src, seed=9, files=20)
    want = tree_digest(src)
    mp = tmp_path / "array"
    fsdir = tmp_path / "fs"
    mp.mkdir()
    fuseraid("mount", *members, mp)
    dev = None
    writer = None
    pid = None
    try:
        pid = daemon_pid(mp)
        dev = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(mp / "image")],
                             capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["mkfs.ext4", "-q", "-F", dev], check=True, capture_output=True)
        fsdir.mkdir()
        subprocess.run(["mount", dev, str(fsdir)], check=True)
        copy_tree(src, fsdir / "tree")
        subprocess.run(["sync", "-f", str(fsdir / "tree")], check=True)
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(fsdir)],
                                  stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        assert wait_gone(pid, 10)
    finally:
        if writer is not None:
            writer.kill()
            writer.wait()
        unmount(fsdir, timeout=5)
        if dev:
            detach_loop(dev)
        unmount(mp, timeout=5)
        if pid is not None:
            kill_daemon(pid)
    states = fuseraid("examine", *members).stdout
    assert "State : active" in states  # died dirty
    p = fuseraid("status", mp, check=False)  # its socket is stale: one clear line
    assert p.returncode == 1 and p.stderr.strip().endswith("the fuseraid daemon is not running")
    with fuseraid_mount(members, mp) as mp:
        st = status(mp)
        assert st["task"] is None or st["task"]["name"] == "resync", st
        st = wait_idle(mp)
        assert st["in_sync"] and st["state"] in ("clean", "active"), st
        assert mismatches(mp) == 0
        with loop_device(mp / "image") as dev:
            with fs_mount(dev, fsdir) as fs:  # replays the journal
                assert tree_digest(fs / "tree") == want
            r = fsck("ext4", dev)
            assert r.returncode == 0, r.stdout + r.stderr
